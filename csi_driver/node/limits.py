"""Enforce each staged volume's limits on the cgroups of the pods that use it.

The limits come from the staging record (first from the publish context, then from the
target's WatchVolumes stream); the pods from the publications (kubelet's pod UID with
podInfoOnMount). `sync` is idempotent and cheap when nothing changed: it reads io.max
and writes only a line that differs, so it runs after publish, after a reconnect
(a new namespace device has a new MAJ:MIN), after a live change and at start-up.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from csi_driver.node import devices
from csi_driver.node.cgroups import Hierarchy, pod_cgroup_candidates
from csi_driver.node.staging import StagingRecord
from nvme_target.model import QoS
from nvme_target.protect import effective
from sluice_common.errors import FailedPrecondition, Unavailable

log = structlog.get_logger(__name__)
PROTECTION_FILE = "protection.json"  # written by csi_driver/node/protection.py


def load_protection(state_dir: Path) -> dict:
    """What the node last wrote about latency protection: {"at": unix time, "volumes":
    {volume id: {latency_us, bytes_per_second, ios_per_second, ceiling, reason}}}; {} when none."""
    try:
        return json.loads((state_dir / PROTECTION_FILE).read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class InForce:
    """One row of the QoS report: a volume's limit line on one pod's cgroup."""

    volume_id: str
    pod_uid: str
    cgroup: str
    device: str
    wanted: dict
    io_max: str
    io_stat: str


class PodLimits:
    def __init__(self, cgroup_root: Path, ceiling: Callable[[str], QoS | None] = lambda _: None) -> None:
        """`ceiling(volume_id)`: latency protection's dynamic ceiling in force (None: none)."""
        self.cgroup_root = cgroup_root
        self.ceiling = ceiling
        self._hierarchy: Hierarchy | None = None
        # (volume id, pod uid) -> (device MAJ:MIN, cgroups, limits) of the last apply that
        # found every line right or wrote it: what verify() re-reads
        self._applied: dict[tuple[str, str], tuple[str, tuple[Path, ...], QoS]] = {}
        self._lock = threading.Lock()

    @property
    def hierarchy(self) -> Hierarchy:
        with self._lock:
            if self._hierarchy is None:
                self._hierarchy = Hierarchy.detect(self.cgroup_root)
            return self._hierarchy

    def check(self, record: StagingRecord, pod_uid: str) -> Path | None:
        """Before publishing: the pod's cgroup when the volume has limits to enforce.
        FailedPrecondition when it has limits and the pod or its cgroup is unknown."""
        if pod_uid:
            pod_cgroup_candidates(pod_uid)  # InvalidArgument for anything but a pod UID
        if record.limits.unlimited and record.limits.qos_class != "bulk":  # bulk: ceilings come
            return None
        if not pod_uid:
            raise FailedPrecondition(
                f"volume {record.volume_id} has I/O limits ({record.qos}) but volume_context has no "
                "csi.storage.k8s.io/pod.uid: the CSIDriver must set podInfoOnMount: true")
        return self.hierarchy.pod(pod_uid)

    def apply(self, record: StagingRecord, pod_uid: str) -> str | None:
        """Make the pod's cgroup carry the record's limits for the volume's device.
        Returns the line written, or None when it already did."""
        self._applied.pop((record.volume_id, pod_uid), None)
        device = self._device(record)
        pod = self.hierarchy.pod(pod_uid)
        majmin = devices.majmin(device)
        wanted = self.wanted(record)
        line = None
        cgroups = tuple(self.hierarchy.enforced_at(pod))
        for cgroup in cgroups:
            if self.hierarchy.limits(cgroup, majmin) == wanted:
                continue
            self.hierarchy.prepare(cgroup)
            line = self.hierarchy.set_limits(cgroup, majmin, wanted)
            log.info("io limits written", volume_id=record.volume_id, pod_uid=pod_uid, cgroup=str(cgroup),
                     device=device, line=line)
        self._applied[(record.volume_id, pod_uid)] = (majmin, cgroups, wanted)
        return line

    def verify(self, record: StagingRecord) -> None:
        """sync() for a record that has not changed on a device that has not changed (no
        udev event since): re-read only the io.max lines the last apply left and apply
        again where one differs (someone else wrote it) or nothing is known yet."""
        wanted = self.wanted(record)
        for pod_uid in sorted(record.pod_uids()):
            known = self._applied.get((record.volume_id, pod_uid))
            if known is not None and known[2] == wanted and all(
                    self.hierarchy.limits(cgroup, known[0]) == wanted for cgroup in known[1]):
                continue
            try:
                self.apply(record, pod_uid)
            except (FailedPrecondition, Unavailable) as exc:
                log.warning("io limits not applied", volume_id=record.volume_id, pod_uid=pod_uid, error=str(exc))

    def wanted(self, record: StagingRecord) -> QoS:
        """The io.max limits for the volume: its static caps, lowered by a dynamic ceiling."""
        return effective(record.limits, self.ceiling(record.volume_id))

    def clear(self, record: StagingRecord, pod_uid: str) -> None:
        """Remove the volume's line from the pod's cgroup; a pod or device already gone
        has nothing to remove."""
        self._applied.pop((record.volume_id, pod_uid), None)
        device = devices.find_by_uuid(record.ns_uuid)
        if device is None or not pod_uid:
            return
        try:
            pod = self.hierarchy.pod(pod_uid)
        except FailedPrecondition:
            return
        majmin = devices.majmin(device)
        for cgroup in self.hierarchy.enforced_at(pod):
            if self.hierarchy.limits(cgroup, majmin) != QoS():
                line = self.hierarchy.set_limits(cgroup, majmin, QoS())
                log.info("io limits removed", volume_id=record.volume_id, pod_uid=pod_uid, cgroup=str(cgroup),
                         device=device, line=line)

    def sync(self, record: StagingRecord) -> None:
        """apply() for every pod using the volume; problems are logged, not raised (a
        pod may be going away while its volume is still published)."""
        for pod_uid in sorted(record.pod_uids()):
            try:
                self.apply(record, pod_uid)
            except (FailedPrecondition, Unavailable) as exc:
                log.warning("io limits not applied", volume_id=record.volume_id, pod_uid=pod_uid, error=str(exc))

    def report(self, records: list[StagingRecord]) -> list[InForce]:
        rows = []
        for record in records:
            device = devices.find_by_uuid(record.ns_uuid) or ""
            majmin = devices.majmin(device) if device else ""
            for pod_uid in sorted(record.pod_uids()):
                try:
                    cgroup = self.hierarchy.pod(pod_uid)
                except FailedPrecondition as exc:
                    rows.append(InForce(record.volume_id, pod_uid, f"missing: {exc}", device, record.qos, "", ""))
                    continue
                rows.append(InForce(record.volume_id, pod_uid, str(cgroup), device, record.qos,
                                    self.hierarchy.line(cgroup, majmin) if majmin else "",
                                    self.hierarchy.stat(cgroup, majmin) if majmin else ""))
        return rows

    @staticmethod
    def _device(record: StagingRecord) -> str:
        device = devices.find_by_uuid(record.ns_uuid)
        if device is None:
            raise Unavailable(f"namespace {record.ns_uuid} of {record.volume_id} is not attached")
        return device
