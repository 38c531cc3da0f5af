"""What a pod's mount is made from, and whether one found at the target is right."""

from __future__ import annotations

import os
from pathlib import Path

from csi_driver.node import devices, mounts, readonly
from csi_driver.node.staging import StagingRecord
from sluice_common.errors import FailedPrecondition, Unavailable


def matches(record: StagingRecord, target_path: str, existing: mounts.MountEntry, read_only: bool) -> bool:
    """Whether the mount at the target is the one publish would make (flags and source)."""
    if existing.read_only != read_only:
        return False
    if record.access_type == "mount":
        staged = mounts.at(record.staging_path)
        return staged is not None and staged.majmin == existing.majmin
    want = (readonly.layer_device(readonly.layer_name(record.volume_id, target_path)) if read_only
            else devices.find_by_uuid(record.ns_uuid))
    return want is not None and _rdev(target_path) == devices.majmin(want)


def source(record: StagingRecord, target_path: str, read_only: bool) -> str:
    """The staging path (Mount) or the device node (Block; its read-only layer when
    read-only), with the target made ready to be mounted on."""
    target = Path(target_path)
    if record.access_type == "mount":
        if mounts.at(record.staging_path) is None:
            raise FailedPrecondition(f"{record.staging_path} is not mounted: stage the volume again")
        target.mkdir(parents=True, exist_ok=True)
        return record.staging_path
    device = devices.find_by_uuid(record.ns_uuid)
    if device is None:
        raise Unavailable(f"namespace {record.ns_uuid} of {record.volume_id} is not attached")
    if read_only:  # a read-only bind of a device node does not stop O_RDWR: a read-only disk does
        device = readonly.make_layer(readonly.layer_name(record.volume_id, target_path), device)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    return f"/dev/{device}"


def _rdev(path: str) -> str:
    try:
        rdev = os.stat(path).st_rdev
    except OSError:
        return ""
    return f"{os.major(rdev)}:{os.minor(rdev)}"
