"""The GroupController's volume group snapshots in plain Python (CSI v1.12).

A group snapshot is taken on one target (its agent fences every member's I/O at one
instant; nvme_target/groups.py): members on different targets are refused, because
no single fence covers them. Its CSI id is `<target id>/<g-…>`; each member is an
ordinary snapshot (`<target id>/<s-…>`: GetSnapshot, ListSnapshots, CreateVolume from
it) whose `group_snapshot_id` names the group, so it is deleted with the group only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from csi_driver import ids
from csi_driver.locks import InFlight
from csi_driver.model import GroupSnapshotInfo
from csi_driver.params import SIDECAR_PREFIX
from csi_driver.snapshots import info as snapshot_info
from csi_driver.targets import Target, Targets
from nvme_target import naming, validate
from nvme_target.model import GroupSnapshot
from sluice_common.errors import AlreadyExists, InvalidArgument, NotFound

log = structlog.get_logger(__name__)


class GroupSnapshotService:
    def __init__(self, targets: Targets, inflight: InFlight) -> None:
        self.targets = targets
        self.inflight = inflight

    def create(self, name: str, source_volume_ids: Sequence[str], parameters: Mapping[str, str]) -> GroupSnapshotInfo:
        validate.name(name)
        for key in parameters:
            if not key.startswith(SIDECAR_PREFIX):
                raise InvalidArgument(f"parameters: unknown key {key!r} (group snapshots take none)")
        target, vol_ids = self._one_target(source_volume_ids)
        group_id = naming.group_snapshot_id(name)
        with self.inflight.guard(f"group-snapshot-name:{name}"):
            for other in self.targets.up():
                if other is not target:
                    self._refuse_elsewhere(other, group_id, name)
            group = target.backend.create_group_snapshot(name, vol_ids)
        log.info("group snapshot created", group_snapshot_id=ids.join(target.id, group.id),
                 members=len(group.snapshots))
        return _info(target, group)

    def delete(self, group_snapshot_id: str, snapshot_ids: Sequence[str]) -> None:
        if not group_snapshot_id:
            raise InvalidArgument("group_snapshot_id is required")
        try:
            target_id, group_id = ids.split_group_snapshot(group_snapshot_id)
            target = self.targets.get(target_id, f"group snapshot {group_snapshot_id}")
            found = _info(target, target.backend.get_group_snapshot(group_id))
        except NotFound:
            return
        _check_members(found, snapshot_ids)
        with self.inflight.guard(f"group-snapshot:{group_snapshot_id}"):
            target.backend.delete_group_snapshot(group_id)
        log.info("group snapshot deleted", group_snapshot_id=group_snapshot_id)

    def get(self, group_snapshot_id: str, snapshot_ids: Sequence[str]) -> GroupSnapshotInfo:
        if not group_snapshot_id:
            raise InvalidArgument("group_snapshot_id is required")
        target_id, group_id = ids.split_group_snapshot(group_snapshot_id)
        target = self.targets.get(target_id, f"group snapshot {group_snapshot_id}")
        found = _info(target, target.backend.get_group_snapshot(group_id))
        _check_members(found, snapshot_ids)
        return found

    def _one_target(self, source_volume_ids: Sequence[str]) -> tuple[Target, list[str]]:
        if not source_volume_ids:
            raise InvalidArgument("source_volume_ids is required (at least one volume)")
        split = [ids.split_volume(v, f"source_volume_ids[{i}]") for i, v in enumerate(source_volume_ids)]
        target_ids = sorted({t for t, _ in split})
        if len(target_ids) > 1:
            raise InvalidArgument(f"source_volume_ids: the volumes are on targets {', '.join(target_ids)}; a group "
                                  "snapshot is cut on one target (one I/O fence), so its volumes must share one")
        target = self.targets.get(target_ids[0], f"volume {source_volume_ids[0]}")
        return target, [v for _, v in split]

    def _refuse_elsewhere(self, other: Target, group_id: str, name: str) -> None:
        """The name is taken if another target already holds a group under it."""
        try:
            found = other.backend.get_group_snapshot(group_id)
        except NotFound:
            return
        raise AlreadyExists(f"group snapshot {name!r} exists on target {other.id} for volumes "
                            f"{', '.join(ids.join(other.id, v) for v in found.source_volume_ids)}")


def _info(target: Target, group: GroupSnapshot) -> GroupSnapshotInfo:
    return GroupSnapshotInfo(group_snapshot_id=ids.join(target.id, group.id),
                             snapshots=tuple(snapshot_info(target, s) for s in group.snapshots),
                             created_at=group.created_at, ready=group.ready)


def _check_members(found: GroupSnapshotInfo, snapshot_ids: Sequence[str]) -> None:
    """CSI: the CO passes the members it knows; a plugin that can tell SHOULD refuse a
    mismatch (INVALID_ARGUMENT). An empty list is not checked."""
    have = sorted(s.snapshot_id for s in found.snapshots)
    if snapshot_ids and sorted(snapshot_ids) != have:
        raise InvalidArgument(f"snapshot_ids: {', '.join(sorted(snapshot_ids))} are not the members of group "
                              f"snapshot {found.group_snapshot_id} ({', '.join(have)})")
