"""A staged volume's condition as the node sees it (NodeGetVolumeStats): the NVMe/TCP
connection, the device under the staging mount, the filesystem's flags, and what the
target says about the volume (Volume.condition, from the WatchVolumes stream)."""

from __future__ import annotations

from csi_driver.node import devices, fabrics, mounts
from csi_driver.node.staging import StagingRecord

HEALTHY = "volume is healthy"


def condition(record: StagingRecord, volume_path: str, host_nqn: str, at_target: str = "") -> tuple[bool, str]:
    """(abnormal, message). `at_target`: the target's Volume.condition ("" healthy)."""
    for check in (_connection(record, host_nqn), _staging(record), _filesystem(record, volume_path)):
        if check:
            return True, check + (f"; the target reports: {at_target}" if at_target else "")
    if at_target:
        return True, f"the target reports: {at_target}"
    return False, HEALTHY


def _connection(record: StagingRecord, host_nqn: str) -> str:
    ctrls = fabrics.controllers(record.subnqn, host_nqn)
    if not ctrls:
        return (f"no NVMe/TCP controller for {record.subnqn}: the kernel dropped the connection "
                "(ctrl_loss_tmo passed?); the next NodeStage/NodePublish connects and stages again")
    states = {c: fabrics.state(c) for c in ctrls}
    if not any(s == "live" for s in states.values()):
        return "controller " + ", ".join(f"{c} is {s}" for c, s in states.items())
    return ""


def _staging(record: StagingRecord) -> str:
    if record.access_type != "mount":
        return ""
    device = devices.find_by_uuid(record.ns_uuid)
    if device is None:
        return f"namespace {record.ns_uuid} is gone from this node"
    staged = mounts.at(record.staging_path)
    if staged is None:
        return f"{record.staging_path} is not mounted"
    if staged.majmin != devices.majmin(device) or record.diskseq and devices.diskseq(device) != record.diskseq:
        return "the staged filesystem is on a device that is gone; the next NodePublish stages it again"
    return ""


def _filesystem(record: StagingRecord, volume_path: str) -> str:
    mounted = mounts.at(volume_path)
    if record.access_type == "mount" and mounted is not None and mounted.read_only and not record.read_only:
        staged = mounts.at(record.staging_path)
        if staged is not None and staged.read_only:
            return "the filesystem is read-only (remounted after an error?)"
    return ""
