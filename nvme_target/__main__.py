"""`python -m nvme_target`: run the storage-node target agent."""

from __future__ import annotations

import signal
import sys
import threading

import structlog

from nvme_target import settings as agent_settings
from nvme_target.agent.serve import start
from sluice_common import logs
from sluice_common.errors import SluiceError


def main(argv: list[str] | None = None) -> int:
    try:
        settings = agent_settings.from_args(argv)
    except SluiceError as exc:
        print(f"nvme_target: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    log = structlog.get_logger("nvme_target")
    try:
        server = start(settings)
    except SluiceError as exc:
        log.error("target agent failed to start", error=str(exc))
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("target agent stopping")
    server.stop(grace=5).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
