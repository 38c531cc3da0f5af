"""Sequence-stamped writers for crash-consistency checks on the real kernel.

Each Stamper writes 4 KiB blocks (O_DIRECT, one at a time, so each write is
acknowledged before the next is issued) to consecutive offsets of one device. Every
block carries a sequence number taken from a counter shared by all stampers, and the
stamper logs when each write was issued and acknowledged.

A set of snapshots is crash-consistent when no write they hold was issued after a write
they lack had been acknowledged: `check` counts the writes that break that (acknowledged
before some captured write was issued, yet missing).
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass, field

BLOCK = 4096
MAGIC = b"SLUICESEQ"


@dataclass(frozen=True)
class Write:
    seq: int
    block: int
    issued_ns: int
    acked_ns: int


@dataclass
class Stamper:
    device: str
    counter: itertools.count
    counter_lock: threading.Lock
    max_blocks: int
    log: list[Write] = field(default_factory=list)
    error: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        fd = os.open(self.device, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, BLOCK)
        try:
            for block in range(self.max_blocks):
                if stop.is_set():
                    return
                with self.counter_lock:
                    seq = next(self.counter)
                buf.seek(0)
                buf.write(MAGIC + struct.pack("<Q", seq))
                issued = time.monotonic_ns()
                os.pwritev(fd, [buf], block * BLOCK)
                self.log.append(Write(seq, block, issued, time.monotonic_ns()))
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            os.close(fd)


class Stampers:
    """One stamper per device, sharing one counter, in threads."""

    def __init__(self, devices: list[str], max_blocks: int) -> None:
        counter, lock = itertools.count(1), threading.Lock()
        self.stampers = [Stamper(d, counter, lock, max_blocks) for d in devices]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=s.run, args=(self.stop,), daemon=True) for s in self.stampers]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def writes(self) -> int:
        return min(len(s.log) for s in self.stampers)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)
        errors = [s.error for s in self.stampers if s.error is not None]
        if errors:
            raise errors[0]


def captured(device: str, blocks: int) -> set[int]:
    """The sequence numbers found in the first `blocks` blocks of a device."""
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, blocks * BLOCK)
    try:
        os.preadv(fd, [buf], 0)
    finally:
        os.close(fd)
    data = bytes(buf)
    found = set()
    for block in range(blocks):
        head = data[block * BLOCK: block * BLOCK + len(MAGIC) + 8]
        if head.startswith(MAGIC):
            found.add(struct.unpack("<Q", head[len(MAGIC):])[0])
    return found


@dataclass(frozen=True)
class Verdict:
    newest: tuple[int, ...]     # the newest sequence number each member's snapshot holds
    broken: int                 # writes acknowledged before a captured write was issued, yet missing
    in_flight: int              # writes issued before the newest captured issue and acked after it

    def line(self, label: str) -> str:
        return (f"{label}: newest sequence per member {list(self.newest)}, "
                f"{self.broken} acknowledged writes missing behind a later captured one "
                f"(in flight at the cut: {self.in_flight})")


def check(logs: list[list[Write]], holds: list[set[int]]) -> Verdict:
    everything = [(w, w.seq in held) for log, held in zip(logs, holds, strict=True) for w in log]
    last_issue = max((w.issued_ns for w, kept in everything if kept), default=0)
    broken = sum(1 for w, kept in everything if not kept and w.acked_ns < last_issue)
    in_flight = sum(1 for w, _ in everything if w.issued_ns <= last_issue < w.acked_ns)
    return Verdict(tuple(max(held, default=0) for held in holds), broken, in_flight)


def longest_stall(log: list[Write], start_ns: int, end_ns: int) -> float:
    """Seconds of the longest wait between two acknowledgements (or for one write)
    that overlaps [start, end]: how long this writer's I/O was held."""
    longest = 0
    previous = None
    for w in log:
        gap_start = previous if previous is not None else w.issued_ns
        if w.acked_ns >= start_ns and gap_start <= end_ns:
            longest = max(longest, w.acked_ns - gap_start)
        previous = w.acked_ns
    return longest / 1e9
