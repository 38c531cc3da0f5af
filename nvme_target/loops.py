"""Background loops of the agent: each runs one step every `interval` seconds on a
daemon thread, catches and logs everything a step raises, and keeps going."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def every(interval: float, step: Callable[[], None], name: str,
          stop: threading.Event | None = None) -> threading.Event:
    """Start `step` every `interval` seconds; set the returned event to stop the loop."""
    stop = stop or threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a loop that dies silently is worse
                log.error("background step failed", loop=name, error=str(exc), exc_info=True)

    threading.Thread(target=run, name=name, daemon=True).start()
    return stop
