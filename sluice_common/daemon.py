"""Run a gRPC server until SIGTERM/SIGINT, the way every Sluice process ends."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog

from sluice_common import logs
from sluice_common.errors import SluiceError


def main(prog: str, parse: Callable[[Sequence[str] | None], Any], start: Callable[[Any], grpc.Server],
         argv: Sequence[str] | None = None) -> int:
    """Parse settings (exit 2 on bad flags), start the server (exit 1 when it cannot),
    serve until signalled, then stop with a short grace period (exit 0)."""
    try:
        settings = parse(argv)
    except SluiceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    log = structlog.get_logger(prog)
    try:
        server = start(settings)
    except SluiceError as exc:
        log.error("failed to start", error=str(exc))
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    server.stop(grace=5).wait()
    return 0
