"""`python -m csi_driver --mode controller|node|all`: run the Sluice CSI driver."""

from __future__ import annotations

import signal
import sys
import threading

import structlog

from csi_driver import settings as driver_settings
from csi_driver.server import start
from sluice_common import logs
from sluice_common.errors import SluiceError


def main(argv: list[str] | None = None) -> int:
    try:
        settings = driver_settings.from_args(argv)
    except SluiceError as exc:
        print(f"csi_driver: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    log = structlog.get_logger("csi_driver")
    try:
        server = start(settings)
    except SluiceError as exc:
        log.error("csi driver failed to start", error=str(exc))
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("csi driver stopping")
    server.stop(grace=5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
