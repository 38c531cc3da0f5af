"""CSI volume and snapshot ids: `<target id>/<backend id>`, so every call finds its target."""

from __future__ import annotations

import re

from nvme_target import naming
from sluice_common.errors import InvalidArgument, NotFound

TARGET_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


def check_target_id(target_id: str) -> str:
    if not TARGET_ID.match(target_id or ""):
        raise InvalidArgument(f"target id {target_id!r} must be a DNS label (a-z, 0-9, '-', '.')")
    return target_id


def join(target_id: str, backend_id: str) -> str:
    return f"{target_id}/{backend_id}"


def split_volume(csi_id: str, field: str = "volume_id") -> tuple[str, str]:
    """(target id, backend volume id); NotFound for anything that cannot be ours."""
    return _split(csi_id, field, naming.is_volume_id, "volume")


def split_snapshot(csi_id: str, field: str = "snapshot_id") -> tuple[str, str]:
    return _split(csi_id, field, naming.is_snapshot_id, "snapshot")


def split_group_snapshot(csi_id: str, field: str = "group_snapshot_id") -> tuple[str, str]:
    return _split(csi_id, field, naming.is_group_snapshot_id, "group snapshot")


def _split(csi_id: str, field: str, valid, kind: str) -> tuple[str, str]:
    target, sep, backend_id = (csi_id or "").partition("/")
    if not sep or not TARGET_ID.match(target) or not valid(backend_id):
        raise NotFound(f"{field}: {kind} {csi_id!r} not found")
    return target, backend_id
