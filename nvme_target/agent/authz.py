"""Who may call which agent RPC: one table, enforced by a server interceptor.

The caller's role comes from its verified client certificate (sluice_common/identity):
the controller may call everything; a node may only watch volumes exported to it and
fetch its own connect credentials; a node certificate that carries a host NQN acts only
for that NQN. Callers on the unix socket, or on a listener without TLS, have no
certificate: they are local administrators (the socket is 0660) and count as the
controller. Everything else is PERMISSION_DENIED, and logged (method, role, subject,
reason; never a request's secrets).
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import structlog

from nvme_target.backend import Backend
from sluice_common import identity
from sluice_common.errors import PermissionDenied
from sluice_common.grpc_status import abort
from sluice_common.identity import Identity
from sluice_proto import target_pb2

log = structlog.get_logger(__name__)

# A check returns "" when the caller may make this request, else why not.
Check = Callable[[Backend, Identity, object], str]
ALLOW: Check = lambda backend, caller, request: ""  # noqa: E731


def _exported_to_caller(backend: Backend, caller: Identity, request) -> str:
    """WatchVolumes: every volume asked for is exported to the caller's host NQN (to
    some host, for a node certificate bound to none)."""
    wanted = list(request.volume_ids)
    exports = {x.volume_id: x.hosts for x in backend.list_exports(wanted)}
    for volume_id in wanted:
        hosts = exports.get(volume_id, frozenset())
        if not hosts or (caller.host_nqn and caller.host_nqn not in hosts):
            return f"volume {volume_id} is not exported to {caller.host_nqn or 'any host'}"
    return ""


def _own_credentials(backend: Backend, caller: Identity, request) -> str:
    """GetHostCredentials: only the caller's own host NQN, for a volume exported to it."""
    if caller.host_nqn and request.host_nqn != caller.host_nqn:
        return f"host_nqn {request.host_nqn} is not this node's ({caller.host_nqn})"
    export = backend.get_export(request.volume_id)
    if export is None or request.host_nqn not in export.hosts:
        return f"volume {request.volume_id} is not exported to host_nqn {request.host_nqn}"
    return ""


def _own_reports(backend: Backend, caller: Identity, request) -> str:
    """ReportIO (latency protection): a node reports only as itself, and only on volumes
    exported to the host it reports as — a node cannot squeeze another tenant's volumes
    by reporting false latency for them."""
    if caller.host_nqn and request.host_nqn != caller.host_nqn:
        return f"host_nqn {request.host_nqn} is not this node's ({caller.host_nqn})"
    wanted = [v.volume_id for v in request.volumes]
    exports = {x.volume_id: x.hosts for x in backend.list_exports(wanted)} if wanted else {}
    for volume_id in wanted:
        if request.host_nqn not in exports.get(volume_id, frozenset()):
            return f"volume {volume_id} is not exported to host_nqn {request.host_nqn}"
    return ""


METHODS = tuple(target_pb2.DESCRIPTOR.services_by_name["TargetAgent"].methods_by_name)
NODE_RULES: dict[str, Check] = {"WatchVolumes": _exported_to_caller, "GetHostCredentials": _own_credentials,
                                 "ReportIO": _own_reports}
# method -> {role: check}; a role missing from a method's entry may not call it
RULES: dict[str, dict[str, Check]] = {
    method: {"controller": ALLOW, **({"node": NODE_RULES[method]} if method in NODE_RULES else {})}
    for method in METHODS
}


def caller_of(context: grpc.ServicerContext) -> Identity:
    auth = context.auth_context()
    pems = auth.get("x509_pem_cert")
    if not pems:
        return identity.LOCAL  # no TLS on this listener (unix socket, loopback tests)
    return identity.from_pem(pems[0])


def refusal(backend: Backend, method: str, caller: Identity, request) -> str:
    """"" when `caller` may make this call, else why not."""
    check = RULES.get(method, {}).get(caller.role)
    if check is None:
        return f"{caller.role or 'a certificate without a Sluice role'} may not call {method}"
    return check(backend, caller, request)


class Authorizer(grpc.ServerInterceptor):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._guarded(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guarded(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # the agent has no client-streaming RPCs

    def _guarded(self, method: str, behaviour):
        def guarded(request, context):
            self.authorize(method, request, context)
            return behaviour(request, context)
        return guarded

    def authorize(self, method: str, request, context: grpc.ServicerContext) -> None:
        caller = caller_of(context)
        try:
            reason = refusal(self.backend, method, caller, request)
        except Exception as exc:  # noqa: BLE001 - cannot tell: refuse (fail closed)
            reason = f"authorization check failed: {exc}"
        if reason:
            log.warning("permission denied", method=method, role=caller.role, host_nqn=caller.host_nqn,
                        subject=caller.subject, peer=context.peer(), reason=reason)
            abort(context, PermissionDenied(f"{method}: {reason}"))
