"""The target agent's Prometheus collector and event counters.

Read on scrape from what the backend already holds: the thin pool's figures and the
volume/snapshot counts come from the kernel backend's LV view (one `lvs` at most every
POOL_TTL seconds, shared with the create path) or, for other backends, from their
capacity/list calls cached for POOL_TTL; exports and allowed hosts from the export
records; per exported volume the target-side I/O counters (kernel: the thin LV's dm
device, /sys/block/dm-N/stat; SPDK: one bdev_get_iostat for all of them) and, on SPDK,
the limits the target enforces (assigned_rate_limits, one bdev_get_bdevs).

Labels: target (the agent's --target-id), pool, volume_id, limit, mark, result.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nvme_target import lvtags
from nvme_target.backend import Backend
from nvme_target.fill import FillMarks
from sluice_common.errors import SluiceError, Unavailable
from sluice_common.metrics import read_text

log = structlog.get_logger(__name__)
POOL_TTL = 10.0
SECTOR = 512
RESTORES = Counter("sluice_agent_restores", "Restores of the saved exports at agent start, by result",
                   ["result"])
REPLAYS = Counter("sluice_agent_replays", "Replays of the desired state into a target that forgot it "
                  "(SPDK nvmf_tgt restarted), by result", ["result"])
# /sys/block/dm-N/stat index, scale, or the SPDK iostat key
DISK = {"read_ops_total": (0, 1, "num_read_ops"), "read_bytes_total": (2, SECTOR, "bytes_read"),
        "write_ops_total": (4, 1, "num_write_ops"), "write_bytes_total": (6, SECTOR, "bytes_written"),
        "read_time_seconds_total": (3, 0.001, "read_latency_ticks"),
        "write_time_seconds_total": (7, 0.001, "write_latency_ticks")}


def counted(counter: Counter, action: Callable[[], None]) -> None:
    """Run a restore/replay and count its result; the error goes on up."""
    try:
        action()
    except Exception:
        counter.labels(result="failed").inc()
        raise
    counter.labels(result="ok").inc()


@dataclass(frozen=True)
class Pool:
    size: int
    data_percent: float
    metadata_percent: float
    provisioned: int
    volumes: int
    snapshots: int


class AgentCollector(Collector):
    def __init__(self, backend: Backend, target_id: str, pool: str, marks: FillMarks | None = None,
                 ttl: float = POOL_TTL) -> None:
        self.backend = backend
        self.target, self.pool = target_id, pool
        self.marks = marks or FillMarks()
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, Pool] | None = None

    def describe(self) -> list:
        return _Families(self.target, self.pool).all()

    def collect(self) -> Iterator:
        fam = _Families(self.target, self.pool)
        fam.mark.add_metric([self.target, self.pool, "high"], self.marks.high / 100)
        fam.mark.add_metric([self.target, self.pool, "critical"], self.marks.critical / 100)
        try:
            self._pool_figures(fam, self.pool_now())
            fam.up.add_metric([self.target, self.pool], 1)
        except SluiceError as exc:
            log.warning("pool figures unavailable for metrics", error=str(exc))
            fam.up.add_metric([self.target, self.pool], 0)
        self._exports(fam)
        yield from fam.all()

    def pool_now(self) -> Pool:
        view = getattr(self.backend, "view", None)  # the kernel backend's LV view (its own TTL)
        if view is not None:
            return _lvm_pool(view.current(), self.backend.lvm.pool)
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
        cap = self.backend.capacity()
        pool = Pool(cap.total_bytes, cap.data_percent, cap.metadata_percent, cap.provisioned_bytes,
                    len(self.backend.list_volumes()), len(self.backend.list_snapshots()))
        with self._lock:
            self._cached = (time.monotonic(), pool)
        return pool

    def _pool_figures(self, fam: _Families, pool: Pool) -> None:
        labels = [self.target, self.pool]
        fam.size.add_metric(labels, pool.size)
        fam.data.add_metric(labels, pool.data_percent / 100)
        fam.metadata.add_metric(labels, pool.metadata_percent / 100)
        fam.provisioned.add_metric(labels, pool.provisioned)
        fam.volumes.add_metric(labels, pool.volumes)
        fam.snapshots.add_metric(labels, pool.snapshots)

    def _exports(self, fam: _Families) -> None:
        exports = self.backend.list_exports()
        fam.exports.add_metric([self.target, self.pool], len(exports))
        fam.hosts.add_metric([self.target, self.pool], sum(len(e.hosts) for e in exports))
        ids = [e.volume_id for e in exports]
        if hasattr(self.backend, "lvm"):
            self._kernel_io(fam, ids)
        elif hasattr(self.backend, "rpc"):
            self._spdk_io(fam, ids)

    def _kernel_io(self, fam: _Families, ids: list[str]) -> None:
        for vol_id in ids:
            dm = os.path.basename(os.path.realpath(self.backend.lvm.path(vol_id)))
            fields = read_text(Path("/sys/block") / dm / "stat").split()
            if len(fields) < 11:
                continue
            for name, (index, scale, _) in DISK.items():
                fam.io[name].add_metric([self.target, vol_id], int(fields[index]) * scale)

    def _spdk_io(self, fam: _Families, ids: list[str]) -> None:
        if not ids:
            return
        aliases = {f"{self.backend.config.lvstore}/{v}": v for v in ids}
        try:
            stat = self.backend.rpc.call("bdev_get_iostat", names=list(aliases))
            bdevs = self.backend.rpc.call("bdev_get_bdevs")
        except SluiceError as exc:
            log.warning("SPDK iostat unavailable for metrics", error=str(exc))
            return
        tick_rate = stat.get("tick_rate") or 1
        for vol_id, row in zip(ids, stat.get("bdevs", []), strict=False):
            for name, (_, _, key) in DISK.items():
                scale = 1 / tick_rate if key.endswith("_ticks") else 1
                fam.io[name].add_metric([self.target, vol_id], row.get(key, 0) * scale)
        for bdev in bdevs:
            vol_id = next((aliases[a] for a in bdev.get("aliases", []) if a in aliases), None)
            for key, value in (bdev.get("assigned_rate_limits") or {}).items() if vol_id else ():
                if value:
                    fam.limit.add_metric([self.target, vol_id, key], value)


def _lvm_pool(lvs: dict, pool_name: str) -> Pool:
    pool = lvs.get(pool_name)
    if pool is None or pool.segtype != "thin-pool":
        raise Unavailable(f"thin pool {pool_name} not found")
    kinds = [lvtags.kind(lv) for lv in lvs.values()]
    provisioned = sum(lv.size for lv in lvs.values() if lvtags.kind(lv) == "volume")
    return Pool(pool.size, pool.data_percent, pool.metadata_percent, provisioned,
                kinds.count("volume"), kinds.count("snapshot"))


class _Families:
    def __init__(self, target: str, pool: str) -> None:
        g, c, a = GaugeMetricFamily, CounterMetricFamily, "sluice_agent_"
        pl, vl = ["target", "pool"], ["target", "volume_id"]
        self.up = g(a + "pool_up", "1 when the pool's figures could be read", labels=pl)
        self.size = g(a + "pool_size_bytes", "The thin pool's (lvstore's) data size", labels=pl)
        self.data = g(a + "pool_data_fill_ratio", "Fraction of the pool's data space in use", labels=pl)
        self.metadata = g(a + "pool_metadata_fill_ratio", "Fraction of the pool's metadata in use (LVM; "
                          "0 on SPDK)", labels=pl)
        self.mark = g(a + "pool_fill_mark_ratio", "The fill marks: above high no new volumes, above "
                      "critical the pool's volumes are abnormal", labels=[*pl, "mark"])
        self.provisioned = g(a + "pool_provisioned_bytes", "Sum of the volumes' sizes", labels=pl)
        self.volumes = g(a + "volumes", "Volumes in the pool", labels=pl)
        self.snapshots = g(a + "snapshots", "Snapshots in the pool", labels=pl)
        self.exports = g(a + "exports", "Volumes exported over NVMe/TCP", labels=pl)
        self.hosts = g(a + "allowed_hosts", "Host NQNs allowed, summed over the exports", labels=pl)
        self.io = {name: c(a + "volume_" + name[:-len("_total")], f"Target-side {name.replace('_', ' ')[:-6]} "
                           "of an exported volume", labels=vl) for name in DISK}
        self.limit = g(a + "volume_target_limit", "A limit the SPDK target enforces on the volume "
                       "(assigned_rate_limits key)", labels=[*vl, "limit"])

    def all(self) -> list:
        return [self.up, self.size, self.data, self.metadata, self.mark, self.provisioned, self.volumes,
                self.snapshots, self.exports, self.hosts, *self.io.values(), self.limit]


def agent_collector(backend: Backend, settings) -> AgentCollector:
    """The collector for an agent's backend (`settings`: its AgentSettings)."""
    pool = settings.spdk_lvstore if settings.backend == "spdk" else settings.pool
    return AgentCollector(backend, settings.target_id, pool)
