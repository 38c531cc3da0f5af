"""The controller's snapshot operations in plain Python."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from csi_driver import ids, metrics, paging
from csi_driver.locks import InFlight
from csi_driver.lookup import Asker
from csi_driver.model import SnapshotInfo
from csi_driver.params import SIDECAR_PREFIX
from csi_driver.targets import READ_TIMEOUT, Target, Targets
from nvme_target import validate
from nvme_target.model import Snapshot
from sluice_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

log = structlog.get_logger(__name__)


class SnapshotService:
    def __init__(self, targets: Targets, inflight: InFlight, asker: Asker | None = None) -> None:
        self.targets = targets
        self.inflight = inflight
        self.asker = asker or Asker(READ_TIMEOUT)

    def create(self, name: str, source_volume_id: str, parameters: Mapping[str, str]) -> SnapshotInfo:
        validate.name(name)
        if not source_volume_id:
            raise InvalidArgument("source_volume_id is required")
        for key in parameters:
            if not key.startswith(SIDECAR_PREFIX):
                raise InvalidArgument(f"parameters: unknown key {key!r} (snapshots take none)")
        target_id, vol_id = ids.split_volume(source_volume_id, "source_volume_id")
        target = self.targets.get(target_id, f"volume {source_volume_id}")
        with self.inflight.guard(f"snapshot-name:{name}"):
            found = self._find(name, target)
            if found is not None:
                if found.source_volume_id != source_volume_id:
                    raise AlreadyExists(f"snapshot {name!r} exists for volume {found.source_volume_id}")
                return found
            snap = target.backend.create_snapshot(name, vol_id)
        log.info("snapshot created", snapshot_id=ids.join(target.id, snap.id), volume_id=source_volume_id)
        return _info(target, snap)

    def _find(self, name: str, home: Target) -> SnapshotInfo | None:
        """The snapshot named `name`: a snapshot lives with its source volume, so its
        home target is asked first (a retry ends there); for a new name every other
        target must answer too (the same name there is another source's snapshot, which
        is ALREADY_EXISTS), and a silent one fails the call UNAVAILABLE."""
        found = home.reads.find_snapshot(name)
        if found is not None:
            return _info(home, found)
        others = [t for t in self.targets if t is not home]
        answers = self.asker.all(others, lambda t: t.reads.find_snapshot(name), f"whether snapshot name {name!r} exists")
        return next((_info(t, answers[t.id]) for t in others if answers[t.id] is not None), None)

    def delete(self, snapshot_id: str) -> None:
        if not snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        try:
            target_id, snap_id = ids.split_snapshot(snapshot_id)
        except NotFound:
            return
        if target_id not in self.targets:
            log.error("delete of a snapshot on a target that is no longer configured: answering OK, but its "
                      "storage may be leaked there", snapshot_id=snapshot_id, target=target_id, possible_leak=True)
            metrics.orphaned_delete(target_id)
            return
        target = self.targets.get(target_id, f"snapshot {snapshot_id}")
        with self.inflight.guard(f"snapshot:{snapshot_id}"):
            try:
                group_id = target.backend.get_snapshot(snap_id).group_id
            except NotFound:
                return
            if group_id:  # CSI: a member that carries its group's id is deleted with the group
                raise FailedPrecondition(f"snapshot {snapshot_id} is a member of group snapshot "
                                         f"{ids.join(target.id, group_id)}: delete the group snapshot")
            target.backend.delete_snapshot(snap_id)

    def get(self, snapshot_id: str) -> SnapshotInfo:
        if not snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        target_id, snap_id = ids.split_snapshot(snapshot_id)
        target = self.targets.get(target_id, f"snapshot {snapshot_id}")
        return _info(target, target.reads.get_snapshot(snap_id))

    def list(self, max_entries: int, token: str, snapshot_id: str = "",
             source_volume_id: str = "") -> tuple[list[SnapshotInfo], str]:
        entries = self._matching(snapshot_id, source_volume_id)
        return paging.page(entries, lambda s: s.snapshot_id, max_entries, token, _is_snapshot_id)

    def _matching(self, snapshot_id: str, source_volume_id: str) -> list[SnapshotInfo]:
        try:
            if snapshot_id:
                found = self.get(snapshot_id)
                return [found] if source_volume_id in ("", found.source_volume_id) else []
            if source_volume_id:
                target_id, vol_id = ids.split_volume(source_volume_id)
                target = self.targets.get(target_id, f"volume {source_volume_id}")
                return [_info(target, s) for s in target.reads.list_snapshots(vol_id)]
        except NotFound:
            return []
        targets = list(self.targets)
        answers = self.asker.all(targets, lambda t: t.reads.list_snapshots(), "the snapshot list")
        return [_info(t, s) for t in targets for s in answers[t.id]]


def _info(target: Target, snap: Snapshot) -> SnapshotInfo:
    return SnapshotInfo(snapshot_id=ids.join(target.id, snap.id),
                        source_volume_id=ids.join(target.id, snap.source_volume_id),
                        size_bytes=snap.size_bytes, created_at=snap.created_at, ready=snap.ready,
                        group_snapshot_id=ids.join(target.id, snap.group_id) if snap.group_id else "")


def info(target: Target, snap: Snapshot) -> SnapshotInfo:
    """A backend snapshot as CSI sees it (ids prefixed with the target's)."""
    return _info(target, snap)


def _is_snapshot_id(token: str) -> bool:
    try:
        ids.split_snapshot(token)
        return True
    except NotFound:
        return False
