"""One structured log line per CSI call: method, volume id, gRPC code, duration.
Requests are logged at debug level with secrets redacted (see redact.py)."""

from __future__ import annotations

import time

import grpc
import structlog

from csi_driver.redact import loggable

log = structlog.get_logger("csi")
ID_FIELDS = ("volume_id", "source_volume_id", "snapshot_id", "name")


class CallLogger(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def logged(request, context):
            started = time.monotonic()
            ident = {f: getattr(request, f) for f in ID_FIELDS if getattr(request, f, "")}
            log.debug("csi request", method=method, request=loggable(request))
            code = grpc.StatusCode.OK
            try:
                return inner(request, context)
            except Exception:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                log.info("csi call", method=method, code=code.name,
                         duration_ms=round(1000 * (time.monotonic() - started), 1), **ident)

        return grpc.unary_unary_rpc_method_handler(
            logged, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
