"""Latency protection on the node: measure, report, enforce.

Every `interval` seconds the node reads each staged volume's namespace device stats
(summed over its paths, as the metrics do), turns the difference since the last read
into a mean latency per I/O, bytes/s and I/O/s, and sends them to each volume's target
agent (ReportIO, on the channel of its WatchVolumes stream). The agent's control loop
(nvme_target/protect.py) answers on that stream with a dynamic ceiling for bulk
volumes; the node writes the lower of it and the static caps into io.max.

Fails open: a ceiling lives in memory only, and is dropped when the target's stream
breaks (limits_watch) or the plugin restarts; the static caps stay. What is in force is
also written to <state dir>/protection.json (no fsync: it is a report, rewritten every
interval) for `python -m csi_driver.node.limits_report` and the metrics.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from csi_driver import ids
from csi_driver.node.limits import PROTECTION_FILE
from csi_driver.node.metrics import NamespaceCache, disk_stat, diskstats
from csi_driver.node.staging import StagingRecord
from csi_driver.targets import Targets
from nvme_target.model import IoReport, QoS
from sluice_common.errors import SluiceError

log = structlog.get_logger(__name__)
SECTOR = 512
CLASSES = ("latency", "bulk")  # the volumes the control loop needs to hear about


@dataclass(frozen=True)
class Counters:
    at: float
    ios: int
    ticks_ms: int
    bytes: int
    busy_ms: int = 0  # time the device had I/O in flight

    @classmethod
    def of(cls, stat: list[int], at: float) -> Counters:
        return cls(at, stat[0] + stat[4], stat[3] + stat[7], (stat[2] + stat[6]) * SECTOR, stat[9])

    def since(self, before: Counters) -> IoReport | None:
        """The window from `before` to this; None when the counters went back (a new device).
        A window in which I/O was in flight but none completed reports the time it was in
        flight as its latency (a lower bound: a stalled reader is not idle)."""
        span, ios = self.at - before.at, self.ios - before.ios
        if span <= 0 or ios < 0 or self.bytes < before.bytes:
            return None
        if ios:
            latency = (self.ticks_ms - before.ticks_ms) * 1000.0 / ios
        else:
            latency = max(0, self.busy_ms - before.busy_ms) * 1000.0
        return IoReport(latency, (self.bytes - before.bytes) / span, ios / span)


class Ceilings:
    """The dynamic ceilings the targets sent, by CSI volume id, with why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_force: dict[str, tuple[QoS, str]] = {}
        self.reasons: dict[str, str] = {}

    def get(self, volume_id: str) -> QoS | None:
        with self._lock:
            entry = self._in_force.get(volume_id)
            return entry[0] if entry else None

    def set(self, volume_id: str, ceiling: QoS | None, reason: str) -> bool:
        """Record it; True when the ceiling changed."""
        with self._lock:
            before = self._in_force.get(volume_id)
            if reason:
                self.reasons[volume_id] = reason
            if ceiling is None:
                self._in_force.pop(volume_id, None)
            else:
                self._in_force[volume_id] = (ceiling, reason)
            return (before[0] if before else None) != ceiling

    def volumes(self) -> list[str]:
        with self._lock:
            return sorted(self._in_force)


class IoReporter:
    def __init__(self, targets: Targets, records: Callable[[], list[StagingRecord]], host_nqn: str,
                 ceilings: Ceilings, state_dir: Path) -> None:
        self.targets, self.records, self.host_nqn = targets, records, host_nqn
        self.ceilings = ceilings
        self.path = state_dir / PROTECTION_FILE
        self._before: dict[str, Counters] = {}
        self.latest: dict[str, IoReport] = {}
        self.namespaces = NamespaceCache()

    def step(self) -> None:
        """One report. Only volumes in a protection class (latency or bulk) are measured:
        the others take no part in the loop, and a node with none does nothing but keep
        its report file empty (an idle node with 50 unclassed volumes read every device's
        stats twice a second before)."""
        now = time.monotonic()
        records = [r for r in self.records() if r.limits.qos_class in CLASSES]
        latest: dict[str, IoReport] = {}
        if not records:
            self._before.clear()
            if self.latest or not self.path.exists():
                self.latest = {}
                self._save({})
            return
        by_uuid, stats = self.namespaces.get(), diskstats()  # one read of /proc/diskstats for all
        for record in records:
            ns = by_uuid.get(record.ns_uuid)
            stat = disk_stat(ns.device, stats) if ns else []
            if len(stat) < 10:
                self._before.pop(record.volume_id, None)
                continue
            counters = Counters.of(stat, now)
            before = self._before.get(record.volume_id)
            self._before[record.volume_id] = counters
            report = counters.since(before) if before else None
            if report is not None:
                latest[record.volume_id] = report
        self.latest = latest
        self._send(latest)
        self._save(latest)

    def _send(self, latest: dict[str, IoReport]) -> None:
        by_target: dict[str, dict[str, IoReport]] = {}
        for volume_id, report in latest.items():
            target_id, backend_id = ids.split_volume(volume_id)
            by_target.setdefault(target_id, {})[backend_id] = report
        for target in self.targets:
            if target.id in by_target:
                try:
                    target.backend.report_io(self.host_nqn, by_target[target.id])
                except SluiceError as exc:
                    log.debug("I/O report not delivered", target=target.id, error=str(exc))

    def _save(self, latest: dict[str, IoReport]) -> None:
        data = {vid: {"latency_us": round(r.latency_us, 1), "bytes_per_second": round(r.bps),
                      "ios_per_second": round(r.iops, 1)} for vid, r in latest.items()}
        for vid in self.ceilings.volumes():
            data.setdefault(vid, {})["ceiling"] = self.ceilings.get(vid).as_params()  # type: ignore[union-attr]
        for vid, reason in self.ceilings.reasons.items():
            data.setdefault(vid, {})["reason"] = reason
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"at": time.time(), "volumes": data}, sort_keys=True))
        os.replace(tmp, self.path)

