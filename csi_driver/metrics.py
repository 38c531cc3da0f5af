"""The CSI driver's own metrics: every CSI call (count by gRPC code, latency histogram)
through a server interceptor, so servicers stay untouched; per target reachability and
last-seen for the controller; and the count of deletes that found their target gone.

Per-volume and per-pod metrics of the node plugin are in csi_driver/node/metrics.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from csi_driver.interceptors import UnaryInterceptor, failed_code
from csi_driver.targets import Targets

# a CSI call takes from a millisecond (Probe) to minutes (a create that waits for LVM)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CALLS = Counter("sluice_csi_calls", "CSI calls answered, by method and gRPC code", ["method", "code"])
DURATION = Histogram("sluice_csi_call_duration_seconds", "CSI call latency, by method", ["method"],
                     buckets=BUCKETS)
ORPHANED_DELETES = Counter("sluice_controller_orphaned_deletes",
                           "DeleteVolume of a volume whose target is no longer configured (possible leak "
                           "on that storage node)", ["target"])


def orphaned_delete(target_id: str) -> None:
    """Count a delete of a volume on a target the controller no longer knows."""
    ORPHANED_DELETES.labels(target=target_id).inc()


def observe(method: str, code: grpc.StatusCode, seconds: float) -> None:
    CALLS.labels(method=method, code=code.name).inc()
    DURATION.labels(method=method).observe(seconds)


class CallMetrics(UnaryInterceptor):
    def around(self, method, request, context, call):
        started = time.monotonic()
        code = grpc.StatusCode.OK
        try:
            response = call()
            code = context.code() or grpc.StatusCode.OK
            return response
        except Exception:
            code = failed_code(context)
            raise
        finally:
            observe(method, code, time.monotonic() - started)


class TargetsCollector(Collector):
    """Reachability from the controller's cached health checks: a scrape never waits on
    a target; a check older than the cache's TTL is refreshed in the background."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self._checking: set[str] = set()
        self._lock = threading.Lock()

    def describe(self) -> list:
        return list(self._families())

    def collect(self) -> Iterator:
        up, seen = self._families()
        for target in self.targets:
            self._refresh(target)
            healthy, seen_at = target.status()
            up.add_metric([target.id], 1 if healthy else 0)
            if seen_at:
                seen.add_metric([target.id], seen_at)
        yield up
        yield seen

    def _refresh(self, target) -> None:
        """target.healthy() in the background (cached for a few seconds; one at a time)."""
        with self._lock:
            if target.id in self._checking:
                return
            self._checking.add(target.id)

        def check() -> None:
            try:
                target.healthy()
            finally:
                with self._lock:
                    self._checking.discard(target.id)

        threading.Thread(target=check, name=f"health-{target.id}", daemon=True).start()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("sluice_controller_target_up", "1 when the target answered its last health "
                                  "check ready", labels=["target"]),
                GaugeMetricFamily("sluice_controller_target_last_seen_timestamp_seconds",
                                  "When the target last answered ready (Unix time)", labels=["target"]))


def driver_collectors(settings, targets: Targets | None) -> list[Collector]:
    """What this driver process exports beyond the call metrics: the node plugin's
    volumes, the controller's targets, and in all-in-one mode its in-process target."""
    from csi_driver.node.metrics import NodeCollector
    from csi_driver.node.path_events import PathEvents
    from csi_driver.node.staging import StagingStore
    from nvme_target.metrics import agent_collector

    collectors: list[Collector] = []
    if settings.node is not None:
        events = PathEvents()
        events.start()
        collectors.append(NodeCollector(StagingStore(settings.node.state_dir), settings.node.cgroup_root, events))
    if settings.controller and targets is not None:
        collectors.append(TargetsCollector(targets))
    if settings.local_target is not None and targets is not None:
        local = targets.get(settings.local_target.target_id, "local target")
        collectors.append(agent_collector(local.backend, settings.local_target))
    return collectors
