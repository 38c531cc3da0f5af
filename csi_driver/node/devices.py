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
import time
from pathlib import Path

import structlog

from sluice_common.errors import Unavailable

log = structlog.get_logger(__name__)
SYS_BLOCK = Path("/sys/block")


def find_by_uuid(ns_uuid: str) -> str | None:
    """The visible namespace block device (e.g. nvme0n1) whose UUID is `ns_uuid`."""
    for disk in SYS_BLOCK.glob("nvme*n*"):
        try:
            if (disk / "uuid").read_text().strip() == ns_uuid and (disk / "dev").exists():
                return disk.name
        except OSError:
            continue
    return None


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
            device = find_by_uuid(ns_uuid)
            if device and os.path.exists(f"/dev/{device}"):
                return device
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(f"namespace {ns_uuid} did not appear within {timeout:.0f} s")
            if self._monitor is not None:
                self._monitor.poll(timeout=min(remaining, 0.01))  # an event or 10 ms: look again
            else:
                time.sleep(min(remaining, 0.02))
