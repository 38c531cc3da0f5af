"""Find an NVMe namespace's block device by its UUID — never by guessing nvmeXnY, whose
numbers (and MAJ:MIN) change between connects.

A udev monitor is armed *before* the connect (NamespaceWatch as a context manager), so
the add event cannot be missed; sysfs is checked on every wake-up and on a short timer,
to a deadline. With native multipath the visible device is the head nvmeXnY; per-path
nvmeXcYnZ devices have no device number and are skipped.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

import structlog

from sluice_common.errors import Unavailable

log = structlog.get_logger(__name__)
SYS_BLOCK = Path("/sys/block")


class DeviceIndex:
    """namespace UUID -> visible block device, kept instead of sweeping /sys/block for
    every lookup. A hit is confirmed with one sysfs read (the name may have been reused);
    a miss sweeps once and then stays a miss until udev reports a block device event
    (with no udev events, every miss sweeps, as before)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sweeping = threading.Lock()
        self._by_uuid: dict[str, str] = {}
        self._misses: dict[str, int] = {}
        self._generation = 0
        self._observer = None

    def find(self, ns_uuid: str, fresh: bool = False) -> str | None:
        """`fresh`: never answer from a cached miss (waiting for a device to appear)."""
        with self._lock:
            device = self._by_uuid.get(ns_uuid)
            generation = self._generation
            cached_miss = self._observer is not None and self._misses.get(ns_uuid) == generation
            if device is None and cached_miss and not fresh:
                return None
        if device is not None and _uuid_of(device) == ns_uuid and (SYS_BLOCK / device / "dev").exists():
            return device
        with self._sweeping:  # one sweep at a time: an older sweep never overwrites a newer one
            found = _sweep()
            with self._lock:
                self._by_uuid = found
                for seen in found:
                    self._misses.pop(seen, None)
                if ns_uuid not in found:
                    self._misses[ns_uuid] = generation
        return found.get(ns_uuid)

    def generation(self) -> int | None:
        """Moves with every udev block device event; None without udev (nothing is known)."""
        with self._lock:
            return None if self._observer is None else self._generation

    def changed(self, *_args) -> None:
        with self._lock:
            self._generation += 1
            self._misses.clear()

    def follow_udev(self) -> None:
        """Learn of block devices coming and going from udev (once; no-op without udev)."""
        if self._observer is not None:
            return
        try:
            import pyudev

            monitor = pyudev.Monitor.from_netlink(_udev_context(), source="udev")
            monitor.filter_by(subsystem="block")
            observer = pyudev.MonitorObserver(monitor, callback=self.changed, name="device-index")
            observer.daemon = True
            observer.start()
        except Exception as exc:  # noqa: BLE001 - no udev netlink: every miss sweeps
            log.warning("udev events unavailable: device lookups sweep sysfs on a miss", error=str(exc))
            return
        with self._lock:
            self._observer = observer
            self._generation += 1


def _uuid_of(device: str) -> str:
    try:
        return (SYS_BLOCK / device / "uuid").read_text().strip()
    except OSError:
        return ""


def _sweep() -> dict[str, str]:
    found = {}
    for disk in SYS_BLOCK.glob("nvme*n*"):
        if (disk / "dev").exists() and (ns_uuid := _uuid_of(disk.name)):
            found[ns_uuid] = disk.name
    return found


INDEX = DeviceIndex()


def find_by_uuid(ns_uuid: str) -> str | None:
    """The visible namespace block device (e.g. nvme0n1) whose UUID is `ns_uuid`."""
    return INDEX.find(ns_uuid)


def diskseq(device: str) -> int:
    """The kernel's sequence number of this disk (a reconnect after the controller was
    dropped makes a new disk, maybe with the same name and MAJ:MIN, never the same seq)."""
    try:
        return int((SYS_BLOCK / device / "diskseq").read_text())
    except (OSError, ValueError):
        return 0


def exists(majmin_: str) -> bool:
    """Whether a block device with this MAJ:MIN is present."""
    return Path(f"/sys/dev/block/{majmin_}").exists()


def majmin(device: str) -> str:
    return (SYS_BLOCK / device / "dev").read_text().strip()


def size_bytes(device: str) -> int:
    return int((SYS_BLOCK / device / "size").read_text()) * 512


@functools.cache
def _udev_context():
    import pyudev

    return pyudev.Context()  # loading libudev is the slow part of arming a monitor: once


class NamespaceWatch:
    """Arm before connecting; `wait(uuid, timeout)` after."""

    def __init__(self) -> None:
        self._monitor = None

    def __enter__(self) -> NamespaceWatch:
        try:
            import pyudev

            self._monitor = pyudev.Monitor.from_netlink(_udev_context(), source="udev")
            self._monitor.filter_by(subsystem="block")
            self._monitor.start()
        except Exception as exc:  # no udev netlink here: sysfs polling still works
            log.warning("udev monitor unavailable, polling sysfs", error=str(exc))
            self._monitor = None
        return self

    def __exit__(self, *exc) -> None:
        self._monitor = None

    def wait(self, ns_uuid: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            device = INDEX.find(ns_uuid, fresh=True)
            if device and os.path.exists(f"/dev/{device}"):
                return device
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(f"namespace {ns_uuid} did not appear within {timeout:.0f} s")
            if self._monitor is not None:
                self._monitor.poll(timeout=min(remaining, 0.01))  # an event or 10 ms: look again
            else:
                time.sleep(min(remaining, 0.02))
