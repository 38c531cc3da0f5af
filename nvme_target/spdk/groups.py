"""Group snapshots on the SPDK backend (the algorithm is nvme_target/groups.py).

SPDK v26.05 has no JSON-RPC method that holds a subsystem's or a bdev's I/O (its
nvmf RPCs are create/delete/add/remove/get; the subsystem pause in its C library is
not exposed), and `bdev_lvol_snapshot` freezes only the one lvol it snapshots. So a
set of two or more lvols cannot be cut at one instant through the RPC interface:
such a group is refused with FailedPrecondition before anything is made. A group of
one volume is taken (bdev_lvol_snapshot is consistent for its own lvol).
Member records (name, origin, time, group id and size) live in the state file, like
every SPDK snapshot's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sluice_common.errors import AlreadyExists, FailedPrecondition, NotFound, SluiceError

if TYPE_CHECKING:
    from nvme_target.model import Snapshot
    from nvme_target.spdk.backend import SpdkBackend


class SpdkGroups:
    def __init__(self, backend: SpdkBackend) -> None:
        self.backend = backend

    def group_lock(self):
        return self.backend._lock

    def members(self, group_id: str) -> list[tuple[Snapshot, int]]:
        state = self.backend.state
        return [(self.backend.get_snapshot(snap_id), rec["group_size"]) for snap_id, rec in sorted(state.snapshots.items())
                if rec.get("group") == group_id and self._exists(snap_id)]

    def has_volume(self, volume_id: str) -> bool:
        return volume_id in self.backend.state.volumes and self._exists(volume_id)

    def fence(self, volume_ids: Sequence[str]):
        if len(volume_ids) > 1:
            raise FailedPrecondition(
                f"source_volume_ids: {len(volume_ids)} volumes on an SPDK target cannot be snapshotted at one "
                "instant (SPDK v26.05 has no RPC that pauses I/O to a set of lvols); group snapshots of "
                "several volumes need the kernel backend")
        return contextlib.nullcontext(lambda volume_id: None)

    def take(self, member_name: str, snapshot_id: str, volume_id: str, group_id: str, size: int) -> None:
        self.backend.state.put_snapshot(snapshot_id, {
            "name": member_name, "source_volume_id": volume_id, "group": group_id, "group_size": size,
            "created_at": datetime.now(UTC).replace(microsecond=0).isoformat()})
        try:
            self.backend._call("bdev_lvol_snapshot", lvol_name=self.backend._alias(volume_id),
                               snapshot_name=snapshot_id)
        except AlreadyExists:
            pass  # an earlier try made it
        except SluiceError:
            self.backend.state.drop_snapshot(snapshot_id)
            raise

    def drop(self, snapshot_id: str) -> None:
        self.backend.delete_snapshot(snapshot_id)

    def _exists(self, lvol: str) -> bool:
        try:
            return self.backend._size(lvol) is not None
        except NotFound:
            return False
