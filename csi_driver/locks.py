"""Per-object operation guards: a second operation on an object in flight answers
ABORTED (Busy) instead of queueing, as the CSI spec asks. Entries do not outlive the
operation, so the table never grows."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sluice_common.errors import Busy


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()

    @contextlib.contextmanager
    def guard(self, *keys: str) -> Iterator[None]:
        keys = tuple(sorted(set(k for k in keys if k)))
        with self._lock:
            busy = [k for k in keys if k in self._held]
            if busy:
                raise Busy(f"an operation on {busy[0]} is already in progress")
            self._held.update(keys)
        try:
            yield
        finally:
            with self._lock:
                self._held.difference_update(keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)
