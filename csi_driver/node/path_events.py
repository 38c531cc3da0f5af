"""Count NVMe/TCP reconnects from the kernel's own events, without polling.

The nvme core sends a `change` uevent with NVME_EVENT=connected whenever a controller
(re)connects. The first one of a controller is its connect; every later one, until the
controller is removed, is a reconnect after a path loss. A udev monitor thread counts
them per controller (nvmeN); controllers that exist when the monitor starts count as
connected already. Without udev (no netlink) the counts stay 0 and a warning is logged.
"""

from __future__ import annotations

import threading
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)
SYS_NVME = Path("/sys/class/nvme")


class PathEvents:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connected: set[str] = set()
        self._reconnects: dict[str, int] = {}
        self._observer = None

    def reconnects(self, ctrl: str) -> int:
        with self._lock:
            return self._reconnects.get(ctrl, 0)

    def start(self) -> None:
        try:
            import pyudev

            monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
            monitor.filter_by(subsystem="nvme")
            with self._lock:
                self._connected = {p.name for p in SYS_NVME.glob("nvme*")}
            self._observer = pyudev.MonitorObserver(monitor, callback=self.event, name="nvme-path-events")
            self._observer.start()
        except Exception as exc:
            log.warning("no udev monitor: path reconnects are not counted", error=str(exc))

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.send_stop()

    def event(self, device) -> None:
        self.seen(device.action, device.sys_name, device.properties.get("NVME_EVENT", ""))

    def seen(self, action: str, ctrl: str, nvme_event: str) -> None:
        with self._lock:
            if action == "remove":
                self._connected.discard(ctrl)
                self._reconnects.pop(ctrl, None)
            elif action == "change" and nvme_event == "connected":
                if ctrl in self._connected:
                    self._reconnects[ctrl] = self._reconnects.get(ctrl, 0) + 1
                self._connected.add(ctrl)
