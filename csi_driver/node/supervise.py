"""Background loops that never die quietly: an exception is logged with its traceback
and the loop goes on at its next tick."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def forever(name: str, body: Callable[[], None], interval: float, stopped: threading.Event) -> threading.Thread:
    """Run `body` every `interval` seconds until `stopped`, in a daemon thread."""
    def loop() -> None:
        while not stopped.wait(interval):
            once(name, body)

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread


def once(name: str, body: Callable[[], None]) -> bool:
    try:
        body()
        return True
    except Exception:  # noqa: BLE001 - a background loop must outlive any one failure
        log.exception("background work failed; it runs again at the next tick", loop=name)
        return False
