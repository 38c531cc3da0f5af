"""One structured log line per CSI call: method, volume id, gRPC code, duration.
Requests are logged at debug level with secrets redacted (see redact.py)."""

from __future__ import annotations

import time

import grpc
import structlog

from csi_driver.interceptors import UnaryInterceptor, failed_code
from csi_driver.redact import loggable

log = structlog.get_logger("csi")
ID_FIELDS = ("volume_id", "source_volume_id", "snapshot_id", "name")


class CallLogger(UnaryInterceptor):
    def around(self, method, request, context, call):
        started = time.monotonic()
        ident = {f: getattr(request, f) for f in ID_FIELDS if getattr(request, f, "")}
        log.debug("csi request", method=method, request=loggable(request))
        code = grpc.StatusCode.OK
        try:
            return call()
        except Exception:
            code = failed_code(context)
            raise
        finally:
            log.info("csi call", method=method, code=code.name,
                     duration_ms=round(1000 * (time.monotonic() - started), 1), **ident)
