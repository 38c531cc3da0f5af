"""Latency protection in the agent: nodes' I/O reports in (ReportIO), the control loop
(nvme_target/protect.py) as soon as a report arrives (at most every MIN_GAP seconds, and
every TICK seconds without reports: staleness is judged then), dynamic ceilings out — to the nodes on their
WatchVolumes streams (the volumes are sent again when their ceiling changes) and to the
target itself where the backend limits there (SPDK). State is in memory only: a restarted
agent starts with no ceiling (fails open to the static caps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

import structlog
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from nvme_target import loops
from nvme_target.backend import Backend
from nvme_target.model import IoReport, QoS, Volume
from nvme_target.protect import Protector, Sample
from sluice_common.errors import NotFound

log = structlog.get_logger(__name__)
TICK = 0.25
MIN_GAP = 0.02  # many nodes reporting at once share one step
CHANGES = Counter("sluice_agent_protection_changes", "Dynamic ceiling changes of bulk volumes, by direction "
                  "(decrease, increase, release)", ["volume_id", "direction"])


class Protection:
    def __init__(self, backend: Backend, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.clock = clock
        self.loop = Protector()
        self._lock = threading.Lock()
        self._policies: dict[str, QoS] = {}
        self._seen = -1
        self._wake = threading.Event()  # a report arrived: decide now, not at the tick's end
        self._stop: threading.Event | None = None

    def start(self, tick: float = TICK) -> threading.Event:
        self._stop = threading.Event()

        def step() -> None:
            self.step()
            self._stop.wait(MIN_GAP)  # type: ignore[union-attr]

        loops.every(tick, step, "protection", stop=self._stop, wake=self._wake)
        return self._stop

    def stop(self) -> None:
        """End the loop (the agent's server stops, a test ends)."""
        if self._stop is not None:
            self._stop.set()
            self._wake.set()

    @classmethod
    def attach(cls, backend: Backend, tick: float = TICK) -> Protection:
        """A running loop for `backend`, which then takes reports and decorates its watches
        itself (how the all-in-one driver's in-process target gets one)."""
        protection = cls(backend)
        backend.protection = protection
        protection.start(tick)
        return protection

    def report(self, host_nqn: str, reports: Mapping[str, IoReport]) -> None:
        now = self.clock()
        with self._lock:
            for vid, r in reports.items():
                self.loop.report(vid, Sample(r.latency_us, r.bps, r.iops, now))
        self._wake.set()

    def decorate(self, vol: Volume) -> Volume:
        """The volume with the ceiling in force (WatchVolumes sends it to the nodes)."""
        with self._lock:
            ceiling, reason = self.loop.ceilings.get(vol.id), self.loop.reasons.get(vol.id, "")
        return replace(vol, ceiling=ceiling.qos() if ceiling else None, ceiling_reason=reason)

    def step(self) -> None:
        policies = self._policies_now()
        with self._lock:
            changes = self.loop.tick(self.clock(), policies)
            ceilings = {vid: self.loop.ceilings.get(vid) for vid in changes}
        for vid, (direction, reason) in changes.items():
            ceiling = ceilings[vid]
            (log.debug if direction == "increase" else log.info)("dynamic ceiling", volume_id=vid, direction=direction, reason=reason,
                     bps=ceiling.bps if ceiling else None, iops=ceiling.iops if ceiling else None)
            CHANGES.labels(volume_id=vid, direction=direction).inc()
            self.backend.apply_ceiling(vid, ceiling.qos() if ceiling else None)
        if changes:
            self.backend.changes.bump()

    def _policies_now(self) -> dict[str, QoS]:
        """The reported volumes' stored qos, re-read only when the backend's volumes changed
        (a ModifyVolume) or a new volume reports."""
        version = self.backend.changes.version
        with self._lock:
            wanted = set(self.loop.samples) | set(self.loop.ceilings)
        if version == self._seen and wanted <= set(self._policies):
            return self._policies
        self._seen, policies = version, {}
        for vid in sorted(wanted):
            try:
                policies[vid] = self.backend.get_volume(vid).limits
            except NotFound:
                with self._lock:
                    self.loop.forget(vid)
        self._policies = policies
        return policies

    def snapshot(self) -> tuple[dict, dict, dict]:
        """(ceilings, verdicts, reasons) for the metrics, copied under the lock."""
        with self._lock:
            return dict(self.loop.ceilings), dict(self.loop.verdicts), dict(self.loop.reasons)


class ProtectionCollector(Collector):
    """sluice_agent_protection_*: the ceilings in force and the protected volumes' latency."""

    def __init__(self, protection: Protection, target_id: str) -> None:
        self.protection, self.target = protection, target_id

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ceilings, verdicts, _ = self.protection.snapshot()
        bps, iops, latency, objective = families()
        for vid, c in sorted(ceilings.items()):
            if c.bps is not None:
                bps.add_metric([self.target, vid], c.bps)
            if c.iops is not None:
                iops.add_metric([self.target, vid], c.iops)
        for vid, v in sorted(verdicts.items()):
            latency.add_metric([self.target, vid], v.latency_us / 1e6)
            if v.objective_us is not None:
                objective.add_metric([self.target, vid], v.objective_us / 1e6)
        yield from (bps, iops, latency, objective)

    def describe(self) -> list:
        return list(families())


def families() -> tuple[GaugeMetricFamily, ...]:
    labels = ["target", "volume_id"]
    return (GaugeMetricFamily("sluice_agent_protection_ceiling_bytes_per_second",
                              "A bulk volume's dynamic ceiling in force (each direction)", labels=labels),
            GaugeMetricFamily("sluice_agent_protection_ceiling_iops",
                              "A bulk volume's dynamic I/O ceiling in force (each direction)", labels=labels),
            GaugeMetricFamily("sluice_agent_protected_latency_seconds",
                              "A protected volume's mean latency per I/O in its last report", labels=labels),
            GaugeMetricFamily("sluice_agent_protected_objective_seconds",
                              "The latency a protected volume is held under (its objective, or twice its "
                              "calm baseline)", labels=labels))
