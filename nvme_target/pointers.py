"""Name pointers: the durable record a target keeps for the volume names it is home to.

The controller places a volume name on its candidates in rendezvous order; the name's
home is its first candidate over ALL configured targets (placement.home). Before the
controller creates the name on any other target it records that target here, on the
home, so a later lookup asks the home first and follows the pointer instead of asking
every target (csi_driver/homes.py). A pointer only ever adds a place to look: one that
outlives its volume (a failed create, a delete) costs one extra question, never a
wrong answer. Kept in memory, saved atomically (statefile) before the call returns.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from sluice_common import statefile

VERSION = 1


class NamePointers:
    def __init__(self, path: Path | None) -> None:
        """`path`: the state file (None: memory only, for fakes)."""
        self.path = path
        self._lock = threading.Lock()
        data = statefile.read_json(path, default={}) if path else {}
        self._pointers: dict[str, tuple[str, ...]] = {
            name: tuple(targets) for name, targets in (data.get("pointers") or {}).items()}

    def get(self, name: str) -> tuple[str, ...]:
        """The targets `name` was placed on away from this home, oldest first."""
        with self._lock:
            return self._pointers.get(name, ())

    def add(self, pointers: Mapping[str, str]) -> None:
        """Record each name -> target (kept with any earlier ones); durable on return."""
        with self._lock:
            merged = dict(self._pointers)
            for name, target in pointers.items():
                if target not in merged.get(name, ()):
                    merged[name] = (*merged.get(name, ()), target)
            if merged == self._pointers:
                return
            if self.path is not None:
                statefile.write_json(self.path, {"version": VERSION,
                                                 "pointers": {n: list(t) for n, t in merged.items()}})
            self._pointers = merged

    def __len__(self) -> int:
        return len(self._pointers)
