"""The one shape of Sluice's CSI server interceptors: wrap every unary call with
`around(method, request, context, call)`, where `call()` runs the servicer. Subclasses
(logging, metrics) say what they do around a call, not how gRPC handlers are rebuilt."""

from __future__ import annotations

from collections.abc import Callable

import grpc


class UnaryInterceptor(grpc.ServerInterceptor):
    def around(self, method: str, request, context, call: Callable[[], object]):
        raise NotImplementedError

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def wrapped(request, context):
            return self.around(method, request, context, lambda: inner(request, context))

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)


def failed_code(context) -> grpc.StatusCode:
    """The code of a call whose servicer raised: what it set, else UNKNOWN."""
    return context.code() or grpc.StatusCode.UNKNOWN
