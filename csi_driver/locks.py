"""Per-object operation guards: a second operation on an object in flight answers
ABORTED (Busy) instead of queueing, as the CSI spec asks; and reservations on a shared
allowance, whose short check-and-claim waits its turn. Entries do not outlive the
operation, so the tables never grow."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

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


class Reservations:
    """Claims on a shared allowance (a node's attach limit) made atomically with the
    check that allows them. Callers for one key wait their turn for a short critical
    section (the check and the claim) instead of answering ABORTED to each other; the
    slow work after the claim runs in parallel. A claim lasts until its block ends, so
    the check sees both what is done (in the caller's own count) and what is in flight
    (the claims it is given). Entries do not outlive their users."""

    def __init__(self, wait: float) -> None:
        """`wait`: how long a caller waits for its turn before it answers Busy."""
        self.wait = wait
        self._lock = threading.Lock()
        self._turns: dict[str, tuple[threading.Lock, int]] = {}  # key -> (its lock, callers using it)
        self._claims: dict[str, set[str]] = {}

    @contextlib.contextmanager
    def claim(self, key: str, item: str, check: Callable[[frozenset[str]], None]) -> Iterator[None]:
        """Run `check(items claimed by others in flight)` and claim `item` under `key`'s
        turn; `check` raises to refuse. The claim is held until the block ends."""
        with self._turn(key):
            check(frozenset(self._claims.get(key, ())))
            with self._lock:
                self._claims.setdefault(key, set()).add(item)
        try:
            yield
        finally:
            with self._lock:
                self._claims[key].discard(item)
                if not self._claims[key]:
                    del self._claims[key]

    @contextlib.contextmanager
    def _turn(self, key: str) -> Iterator[None]:
        with self._lock:
            lock, users = self._turns.get(key, (threading.Lock(), 0))
            self._turns[key] = (lock, users + 1)
        try:
            if not lock.acquire(timeout=self.wait):
                raise Busy(f"{key} is busy: no turn within {self.wait:g} s")
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._lock:
                lock, users = self._turns[key]
                if users == 1:
                    del self._turns[key]
                else:
                    self._turns[key] = (lock, users - 1)

    def __len__(self) -> int:
        with self._lock:
            return len(self._turns) + len(self._claims)
