"""The agent's index of its LVs: the LVM report as the agent last saw it, so calls
answer without running `lvs` (a few seconds each on a busy node with many LVs).

LVM stays the source of truth on disk. The index is built by the first read, updated
by each of the agent's own mutations (it is the only writer of its thin pool), re-read
whole by the kernel backend's background loop every --fill-interval seconds (pool fill
changes with I/O; the same read re-syncs anything changed behind the agent's back),
re-read at once on demand (the agent's Resync RPC: `Backend.resync`), and re-read by
any read when it is older than `ttl` (a backstop should the loop stop).
Mutations that must not act on a stale picture (delete, expand, clone, snapshot) ask
LVM afresh; a create that LVM refuses falls back to a fresh read, so a stale index
costs a retry, never a wrong answer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from nvme_target.lvm import LogicalVolume, Lvm


class LvView:
    def __init__(self, lvm: Lvm, ttl: float = 30.0) -> None:
        self.lvm = lvm
        self.ttl = ttl
        self._lock = threading.Lock()
        self._lvs: dict[str, LogicalVolume] | None = None
        self._taken_at = 0.0
        self._generation = 0  # bumped by every mutation, so a slow read cannot undo one

    def fresh(self) -> dict[str, LogicalVolume]:
        with self._lock:
            generation = self._generation
        lvs = self.lvm.report()
        with self._lock:
            if generation == self._generation:
                self._lvs, self._taken_at = lvs, time.monotonic()
        return dict(lvs)

    def current(self) -> dict[str, LogicalVolume]:
        with self._lock:
            if self._lvs is not None and time.monotonic() - self._taken_at < self.ttl:
                return dict(self._lvs)
        return self.fresh()

    def created(self, lv: LogicalVolume) -> None:
        self._mutate(lambda lvs: lvs.__setitem__(lv.name, lv))

    def removed(self, name: str) -> None:
        self._mutate(lambda lvs: lvs.pop(name, None))

    def resized(self, name: str, size: int) -> None:
        self._mutate(lambda lvs: lvs.__setitem__(name, replace(lvs[name], size=size)) if name in lvs else None)

    def retagged(self, name: str, tags: tuple[str, ...]) -> None:
        self._mutate(lambda lvs: lvs.__setitem__(name, replace(lvs[name], tags=tags)) if name in lvs else None)

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._lvs = None

    def _mutate(self, change) -> None:
        with self._lock:
            self._generation += 1
            if self._lvs is not None:
                change(self._lvs)
