"""The one table from Sluice's typed errors to gRPC status codes, and back.

Servicers wrap every method with `translate`: a SluiceError becomes its status code
with its message; anything else is logged and becomes INTERNAL (never UNKNOWN).
Between Sluice's own processes the exact error class also travels in trailing
metadata, so a client re-raises the same typed error the server raised.
"""

from __future__ import annotations

import functools
import json
from typing import Any
from collections.abc import Callable

import grpc
import structlog

from sluice_common import errors as e

log = structlog.get_logger(__name__)

CODES: dict[type[e.SluiceError], grpc.StatusCode] = {
    e.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    e.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    e.NoSpace: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.InUse: grpc.StatusCode.FAILED_PRECONDITION,
    e.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    e.Busy: grpc.StatusCode.ABORTED,
    e.StaleToken: grpc.StatusCode.ABORTED,
    e.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
    e.BackendFailure: grpc.StatusCode.INTERNAL,
}
_BY_NAME = {cls.__name__: cls for cls in CODES}
_BY_CODE: dict[grpc.StatusCode, type[e.SluiceError]] = {}
for _cls, _code in CODES.items():
    _BY_CODE.setdefault(_code, _cls)
_BY_CODE[grpc.StatusCode.DEADLINE_EXCEEDED] = e.Unavailable

ERROR_KEY = "sluice-error"
DETAILS_KEY = "sluice-error-details"


def code_for(exc: e.SluiceError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, exc: e.SluiceError) -> None:
    cls = next(c for c in type(exc).__mro__ if c in CODES or c is e.SluiceError)
    context.set_trailing_metadata((
        (ERROR_KEY, cls.__name__),
        (DETAILS_KEY, json.dumps(dict(exc.details), default=str)),
    ))
    context.abort(code_for(exc), exc.message)


def translate(method: Callable) -> Callable:
    """Decorator for servicer methods: typed errors → status codes, bugs → INTERNAL."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except e.SluiceError as exc:
            abort(context, exc)
        except Exception as exc:  # a bug: report it as INTERNAL, with a trace in the log
            if isinstance(exc, grpc.RpcError) or context.code() is not None:
                raise  # context.abort() already set the status
            log.exception("unexpected error", method=method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc.__class__.__name__}: {exc}")

    return wrapper


def raised_by_server(err: grpc.RpcError) -> bool:
    """Whether a Sluice server raised this error (a typed error travelled with it), as
    opposed to the transport failing (e.g. UNAVAILABLE: no connection)."""
    return ERROR_KEY in dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]


def from_rpc_error(err: grpc.RpcError) -> e.SluiceError:
    """Rebuild the typed error a Sluice server raised (or the closest match by code)."""
    meta = dict(err.trailing_metadata() or ())  # type: ignore[attr-defined]
    cls = _BY_NAME.get(meta.get(ERROR_KEY, "")) or _BY_CODE.get(err.code(), e.BackendFailure)  # type: ignore[attr-defined]
    try:
        details = json.loads(meta.get(DETAILS_KEY, "{}"))
    except ValueError:
        details = {}
    return cls(err.details() or err.code().name, **details)  # type: ignore[attr-defined]
