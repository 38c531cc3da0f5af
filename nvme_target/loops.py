"""Background loops of the agent: each runs one step every `interval` seconds on a
daemon thread, catches and logs everything a step raises, and keeps going."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def every(interval: float, step: Callable[[], None], name: str,
          stop: threading.Event | None = None, wake: threading.Event | None = None) -> threading.Event:
    """Start `step` every `interval` seconds; set the returned event to stop the loop.
    `wake`: setting it runs the step at once instead of at the end of the interval (set
    `wake` too when stopping such a loop, or it ends only at the interval's end)."""
    stop = stop or threading.Event()

    def pause() -> bool:
        """Wait for the next step; True when the loop is to end."""
        if wake is None:
            return stop.wait(interval)
        wake.wait(interval)
        wake.clear()
        return stop.is_set()

    def run() -> None:
        while not pause():
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a loop that dies silently is worse
                log.error("background step failed", loop=name, error=str(exc), exc_info=True)

    threading.Thread(target=run, name=name, daemon=True).start()
    return stop
