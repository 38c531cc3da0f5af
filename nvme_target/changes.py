"""A change counter that watchers can block on: how a backend tells the volumes it
changed (QoS today) to whoever watches them, in process or through the agent's
WatchVolumes stream, without anyone polling LVM or SPDK."""

from __future__ import annotations

import threading


class ChangeFeed:
    def __init__(self) -> None:
        self._version = 0
        self._changed = threading.Condition()

    @property
    def version(self) -> int:
        with self._changed:
            return self._version

    def bump(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the version differs from `seen` or `timeout` passes; the version now."""
        with self._changed:
            self._changed.wait_for(lambda: self._version != seen, timeout)
            return self._version
