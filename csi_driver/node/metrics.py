"""The node plugin's Prometheus collector: per staged volume, per (volume, pod) and per
NVMe path, read on scrape from the staging records, sysfs and cgroupfs only.

- volume: the namespace device's counters from /proc/diskstats, one read for every
  device (bytes, operations, time spent, in flight), its size, whether it is attached
  and abnormal (no live path);
- volume x pod: the limits wanted (the staging record), the io.max values in force on
  the pod's cgroup, whether they match, the pod's io.stat for the device and the pod
  cgroup's io.pressure (some/full);
- path: each controller's state and the reconnects seen (PathEvents, a udev monitor).

Labels: volume_id, pvc_namespace and pvc_name (from the volume context when the
controller passed them through, else ""), pod_uid, controller, traddr, trsvcid.

Cheap on scrape: what only changes with a device event (namespace UUID, MAJ:MIN, size)
is kept until udev reports a block event; a controller's NQN and address until its
sysfs directory is a new one; a pod's cgroup path until it is gone. What a scrape must
see live is read live: the disk counters, each path's state, and per pod io.max, io.stat
and io.pressure.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from csi_driver.node import devices, fabrics
from csi_driver.node.cgroups import IO_MAX_KEYS, Hierarchy, pod_cgroup_candidates
from csi_driver.node.limits import load_protection
from csi_driver.node.path_events import PathEvents
from csi_driver.node.staging import StagingRecord, StagingStore
from nvme_target.model import QoS
from nvme_target.protect import effective
from sluice_common.errors import FailedPrecondition
from sluice_common.metrics import read_text

SYS_BLOCK = Path("/sys/block")
DISKSTATS = Path("/proc/diskstats")
PATH_DISK = re.compile(r"nvme(\d+)c\d+n(\d+)")
SECTOR = 512
PVC_NAME, PVC_NAMESPACE = "csi.storage.k8s.io/pvc/name", "csi.storage.k8s.io/pvc/namespace"
VOLUME = ("volume_id", "pvc_namespace", "pvc_name")
POD = (*VOLUME, "pod_uid")
PATH = (*VOLUME, "controller", "traddr", "trsvcid")
# /sys/block/<dev>/stat field index -> (metric suffix, scale); see the kernel's
# Documentation/block/stat.rst (times in milliseconds, sizes in 512-byte sectors)
DISK_COUNTERS = {
    "read_ops_total": (0, 1, "Read requests completed"),
    "read_bytes_total": (2, SECTOR, "Bytes read"),
    "read_time_seconds_total": (3, 0.001, "Time read requests spent (sum over requests)"),
    "write_ops_total": (4, 1, "Write requests completed"),
    "write_bytes_total": (6, SECTOR, "Bytes written"),
    "write_time_seconds_total": (7, 0.001, "Time write requests spent (sum over requests)"),
    "io_time_seconds_total": (9, 0.001, "Time the device had I/O in flight"),
}
POD_COUNTERS = {"rbytes": "read_bytes_total", "wbytes": "write_bytes_total",
                "rios": "read_ops_total", "wios": "write_ops_total"}


@dataclass(frozen=True)
class Namespace:
    device: str      # nvmeXnY
    majmin: str
    size: int = 0    # bytes


def namespaces() -> dict[str, Namespace]:
    """Every visible NVMe namespace block device by UUID (one sysfs pass)."""
    found = {}
    for disk in SYS_BLOCK.glob("nvme*n*"):
        uuid, majmin = read_text(disk / "uuid").strip(), read_text(disk / "dev").strip()
        if uuid and majmin:
            found[uuid] = Namespace(disk.name, majmin, int(read_text(disk / "size") or 0) * SECTOR)
    return found


class NamespaceCache:
    """namespaces(), swept again only after a udev block event (devices.INDEX): a
    namespace's UUID, MAJ:MIN and size change only with one (a resize is a change
    event). Without udev events every call sweeps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[int, dict[str, Namespace]] | None = None

    def get(self) -> dict[str, Namespace]:
        generation = devices.INDEX.generation()
        with self._lock:
            if generation is not None and self._seen is not None and self._seen[0] == generation:
                return self._seen[1]
        found = namespaces()  # a later event moves the generation again: this is never kept too long
        if generation is not None:
            with self._lock:
                self._seen = (generation, found)
        return found


@dataclass(frozen=True)
class Path_:
    """One NVMe/TCP controller (a path) of a subsystem."""

    controller: str
    state: str
    traddr: str
    trsvcid: str


class Controllers:
    """Every controller in /sys/class/nvme by subsystem NQN. Its NQN and address are kept
    per sysfs directory (a controller deleted and made again under the same name is a new
    directory, a new inode); its state is read on every call."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple, str, str, str]] = {}  # name -> (identity, nqn, traddr, trsvcid)

    def by_subsystem(self) -> dict[str, list[Path_]]:
        found: dict[str, list[Path_]] = {}
        known: dict[str, tuple[tuple, str, str, str]] = {}
        try:
            entries = sorted(os.scandir(fabrics.SYS_NVME), key=lambda e: e.name)
        except OSError:
            entries = []
        for entry in entries:
            if not entry.name.startswith("nvme"):
                continue
            try:
                st = os.stat(entry.path)  # follows the class link to the device directory
            except OSError:
                continue
            inode = (st.st_ino, st.st_ctime_ns)
            ctrl = Path(entry.path)
            fixed = self._known.get(entry.name)
            if fixed is None or fixed[0] != inode:
                nqn = read_text(ctrl / "subsysnqn").strip()
                address = dict(kv.split("=", 1) for kv in read_text(ctrl / "address").strip().split(",") if "=" in kv)
                fixed = (inode, nqn, address.get("traddr", ""), address.get("trsvcid", ""))
            if not fixed[1]:
                continue
            known[entry.name] = fixed
            found.setdefault(fixed[1], []).append(
                Path_(entry.name, read_text(ctrl / "state").strip() or "unknown", fixed[2], fixed[3]))
        self._known = known
        return found


def paths_by_subsystem() -> dict[str, list[Path_]]:
    """Every controller in /sys/class/nvme by subsystem NQN (read afresh)."""
    return Controllers().by_subsystem()


def volume_labels(record: StagingRecord) -> list[str]:
    ctx = record.context
    return [record.volume_id, ctx.get(PVC_NAMESPACE, ""), ctx.get(PVC_NAME, "")]


class DiskStats(dict):
    """Block devices' counters by name, with the path disks of each multipath head
    indexed once (a scrape of 50 volumes matched every row against every head)."""

    def __init__(self, rows: dict[str, list[int]]) -> None:
        super().__init__(rows)
        self._paths: dict[tuple[str, str], list[list[int]]] | None = None

    def paths_of(self, controller: str, namespace: str) -> list[list[int]]:
        """The rows of head nvme<controller>n<namespace>'s path disks (nvmeXcZnY)."""
        if self._paths is None:
            self._paths = {}
            for name, row in self.items():
                if (m := PATH_DISK.fullmatch(name)) is not None:
                    self._paths.setdefault(m.groups(), []).append(row)
        return self._paths.get((controller, namespace), [])


def diskstats(text: str | None = None) -> DiskStats:
    """Every block device's counters by name, from /proc/diskstats (the fields of
    /sys/block/<dev>/stat, in the same order, after MAJ MIN NAME), hidden multipath
    path disks (nvmeXcZnY) included."""
    found = {}
    for line in (read_text(DISKSTATS) if text is None else text).splitlines():
        parts = line.split()
        if len(parts) >= 14:
            found[parts[2]] = [int(f) for f in parts[3:]]
    return DiskStats(found)


def disk_stat(device: str, stats: dict[str, list[int]]) -> list[int]:
    """The namespace's counters. An NVMe multipath head (nvmeXnY) accounts no I/O of its
    own (seen in the lab: its stat stays 0 while fio writes): the I/O is counted on its
    path disks (nvmeXcZnY), so sum theirs; a device without paths counts its own."""
    if not isinstance(stats, DiskStats):
        stats = DiskStats(stats)
    head = re.fullmatch(r"nvme(\d+)n(\d+)", device)
    rows = stats.paths_of(*head.groups()) if head is not None else []
    if not rows and device in stats:
        rows = [stats[device]]
    rows = [row for row in rows if len(row) >= 11]
    return [sum(column) for column in zip(*rows, strict=False)] if rows else []


def wanted_values(record: StagingRecord, ceiling: QoS | None = None) -> dict[str, int]:
    """The io.max values the volume should have: its caps, lowered by a dynamic ceiling."""
    limits = effective(record.limits, ceiling)
    return {key: getattr(limits, attr) for key, attr in IO_MAX_KEYS.items() if getattr(limits, attr) is not None}


def device_line(path: Path, majmin: str) -> str:
    return next((ln for ln in read_text(path).splitlines() if ln.split()[:1] == [majmin]), "")


def pressure(path: Path) -> dict[str, float]:
    """{"some": seconds, "full": seconds} from a cgroup's io.pressure (total= is in µs)."""
    out = {}
    for line in read_text(path).splitlines():
        kind, *pairs = line.split()
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        if "total" in values:
            out[kind] = int(values["total"]) / 1e6
    return out


class _Families:
    """The metric families of one scrape, created empty and filled volume by volume."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        n = "sluice_node_"
        self.staged = g(n + "volume_staged", "A volume staged on this node (1), with its PVC when known", labels=VOLUME)
        self.attached = g(n + "volume_attached", "1 when the volume's namespace device is present", labels=VOLUME)
        self.abnormal = g(n + "volume_abnormal", "1 when no NVMe/TCP path of the volume is live "
                          "(the VOLUME_CONDITION NodeGetVolumeStats reports)", labels=VOLUME)
        self.size = g(n + "volume_size_bytes", "Size of the namespace device", labels=VOLUME)
        self.in_flight = g(n + "volume_io_in_flight", "I/O requests in flight on the device", labels=VOLUME)
        self.disk = {name: c(n + "volume_" + name[:-len("_total")], doc, labels=VOLUME)
                     for name, (_, _, doc) in DISK_COUNTERS.items()}
        self.wanted = g(n + "volume_limit_wanted", "A limit the volume should have (io.max key; bytes or "
                        "operations per second)", labels=(*VOLUME, "limit"))
        self.io_max = g(n + "pod_io_max", "A limit in force on the pod's cgroup for the device (io.max "
                        "value; absent when max)", labels=(*POD, "limit"))
        self.in_force = g(n + "pod_limits_in_force", "1 when the pod's io.max for the device is exactly the "
                          "limits wanted", labels=POD)
        self.pod_io = {key: c(n + "pod_" + name[:-len("_total")], f"The pod's io.stat {key} for the device",
                              labels=POD) for key, name in POD_COUNTERS.items()}
        self.psi = c(n + "pod_io_pressure_seconds", "The pod cgroup's io.pressure total (some: at least one "
                     "task stalled on I/O, full: all were)", labels=(*POD, "kind"))
        self.path_up = g(n + "path_up", "1 when the NVMe/TCP controller (path) is live", labels=PATH)
        self.path_state = g(n + "path_state", "The controller's state (1 for the current one)",
                            labels=(*PATH, "state"))
        self.reconnects = c(n + "path_reconnects", "Reconnects of the path seen since the plugin started",
                            labels=PATH)
        self.ceiling = g(n + "volume_dynamic_ceiling", "Latency protection's dynamic ceiling in force on a "
                         "bulk volume (io.max key; absent: none)", labels=(*VOLUME, "limit"))
        self.latency = g(n + "volume_latency_seconds", "Mean latency per I/O over the last protection report "
                         "window", labels=VOLUME)

    def all(self) -> list:
        return [self.staged, self.attached, self.abnormal, self.size, self.in_flight, *self.disk.values(),
                self.wanted, self.io_max, self.in_force, *self.pod_io.values(), self.psi,
                self.path_up, self.path_state, self.reconnects, self.ceiling, self.latency]


class NodeCollector(Collector):
    def __init__(self, store: StagingStore, cgroup_root: Path, events: PathEvents | None = None) -> None:
        self.store = store
        self.state_dir = store.index.parent
        self.cgroup_root = cgroup_root
        self.events = events or PathEvents()
        self.namespaces = NamespaceCache()
        self.controllers = Controllers()
        self._scrape = threading.Lock()  # one scrape at a time: the caches are not shared across them
        self._hierarchy_found: Hierarchy | None = None
        self._pod_cgroups: dict[str, Path] = {}

    def describe(self) -> list:
        return _Families().all()

    def collect(self) -> Iterator:
        with self._scrape:
            fam = self._collect()
        yield from fam.all()

    def _collect(self) -> _Families:
        fam = _Families()
        by_uuid, by_nqn, stats = self.namespaces.get(), self.controllers.by_subsystem(), diskstats()
        hierarchy = self._hierarchy()
        pods_seen: dict[str, Path] = {}
        protection = load_protection(self.state_dir).get("volumes", {})
        for record in self.store.all():
            labels = volume_labels(record)
            ns = by_uuid.get(record.ns_uuid)
            seen = protection.get(record.volume_id, {})
            ceiling = QoS.from_params(seen["ceiling"]) if seen.get("ceiling") else None
            wanted = wanted_values(record, ceiling)
            self._volume(fam, record, labels, ns, wanted, stats)
            self._protection(fam, labels, seen, ceiling)
            self._paths(fam, by_nqn.get(record.subnqn, []), labels)
            for pod_uid in sorted(record.pod_uids()):
                cgroup = self._pod_cgroup(hierarchy, pod_uid) if hierarchy else None
                if cgroup is not None:
                    pods_seen[pod_uid] = cgroup
                self._pod(fam, [*labels, pod_uid], ns, hierarchy, cgroup, wanted)
        self._pod_cgroups = pods_seen  # pods no longer published are forgotten
        return fam

    def _pod_cgroup(self, hierarchy: Hierarchy, pod_uid: str) -> Path | None:
        known = self._pod_cgroups.get(pod_uid)
        if known is not None and known.is_dir():
            return known
        return _pod_cgroup(hierarchy, pod_uid)

    @staticmethod
    def _protection(fam: _Families, labels: list[str], seen: dict, ceiling: QoS | None) -> None:
        if "latency_us" in seen:
            fam.latency.add_metric(labels, seen["latency_us"] / 1e6)
        for key, attr in IO_MAX_KEYS.items():
            if ceiling is not None and getattr(ceiling, attr) is not None:
                fam.ceiling.add_metric([*labels, key], getattr(ceiling, attr))

    def _hierarchy(self) -> Hierarchy | None:
        if self._hierarchy_found is not None:
            return self._hierarchy_found  # a node does not change cgroup versions while it runs
        try:
            self._hierarchy_found = Hierarchy.detect(self.cgroup_root)
        except FailedPrecondition:  # no io controller here: the per-pod families stay empty
            return None
        return self._hierarchy_found

    @staticmethod
    def _volume(fam: _Families, record: StagingRecord, labels: list[str], ns: Namespace | None,
                wanted: dict[str, int], stats: dict[str, list[int]]) -> None:
        fam.staged.add_metric(labels, 1)
        fam.attached.add_metric(labels, 1 if ns else 0)
        for key, value in wanted.items():
            fam.wanted.add_metric([*labels, key], value)
        stat = disk_stat(ns.device, stats) if ns else []
        if not stat:
            return
        fam.size.add_metric(labels, ns.size)
        fam.in_flight.add_metric(labels, stat[8])
        for name, (index, scale, _) in DISK_COUNTERS.items():
            fam.disk[name].add_metric(labels, stat[index] * scale)

    def _paths(self, fam: _Families, paths: list[Path_], labels: list[str]) -> None:
        live = False
        for path in paths:
            up = path.state == "live"
            live = live or up
            at = [*labels, path.controller, path.traddr, path.trsvcid]
            fam.path_up.add_metric(at, 1 if up else 0)
            fam.path_state.add_metric([*at, path.state], 1)
            fam.reconnects.add_metric(at, self.events.reconnects(path.controller))
        fam.abnormal.add_metric(labels, 0 if live else 1)

    @staticmethod
    def _pod(fam: _Families, labels: list[str], ns: Namespace | None, hierarchy: Hierarchy | None,
             cgroup: Path | None, wanted: dict[str, int]) -> None:
        if hierarchy is None or cgroup is None or ns is None:
            fam.in_force.add_metric(labels, 0 if wanted else 1)
            return
        limits = hierarchy.limits(cgroup, ns.majmin)
        in_force = {key: getattr(limits, attr) for key, attr in IO_MAX_KEYS.items()
                    if getattr(limits, attr) is not None}
        for key, value in in_force.items():
            fam.io_max.add_metric([*labels, key], value)
        fam.in_force.add_metric(labels, 1 if in_force == wanted else 0)
        stat = dict(p.split("=", 1) for p in device_line(cgroup / "io.stat", ns.majmin).split()[1:] if "=" in p)
        for key, family in fam.pod_io.items():
            if key in stat:  # v2 only; a pod that has not touched the device has no line yet
                family.add_metric(labels, int(stat[key]))
        for kind, seconds in pressure(cgroup / "io.pressure").items():
            fam.psi.add_metric([*labels, kind], seconds)


def _pod_cgroup(hierarchy: Hierarchy, pod_uid: str) -> Path | None:
    for rel in pod_cgroup_candidates(pod_uid):
        if (hierarchy.base / rel).is_dir():
            return hierarchy.base / rel
    return None
