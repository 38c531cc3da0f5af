"""Group snapshots: several volumes of one target snapshotted at one instant.

Every backend runs the same algorithm over a small `GroupStore` of its own:

1. The group id and each member's snapshot id derive from the group's name (and the
   member's volume id), so a retry finds what the first try made.
2. A finished group with the same members is returned again; with other members the
   name is taken (AlreadyExists).
3. Otherwise the store *fences* every member (no write reaches any member from then
   on; writes already in flight complete first), snapshots each member, and lifts the
   fence: no member is snapshotted before all are fenced, so the set is crash-consistent
   (a write one member's snapshot holds was never acknowledged after a write another
   member's snapshot lacks).
4. Each member records the group id and the group's size. A set with fewer members
   than its size was interrupted (a crash between two member snapshots): its members
   were cut under a fence that is gone, so they are deleted and the whole set is taken
   again under a new one, never mixing two instants. A failure part-way deletes the
   members it made, so nothing is half-created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import structlog

from nvme_target import naming, validate
from nvme_target.model import GroupSnapshot, Snapshot
from sluice_common.errors import AlreadyExists, BackendFailure, InvalidArgument, NotFound, SluiceError

log = structlog.get_logger(__name__)


class GroupStore(Protocol):
    """What a backend gives the group algorithm."""

    def group_lock(self) -> AbstractContextManager: ...

    def members(self, group_id: str) -> list[tuple[Snapshot, int]]:
        """The member snapshots recorded with this group id, each with the group size it
        was recorded with."""

    def has_volume(self, volume_id: str) -> bool: ...

    def fence(self, volume_ids: Sequence[str]) -> AbstractContextManager[Callable[[str], None]]:
        """Quiesce I/O to every volume at once (in-flight writes complete, new ones wait);
        yield `release(volume_id)`, which lets one member's I/O go on once it has its
        snapshot; lift it for all on exit, whatever happened inside."""

    def take(self, member_name: str, snapshot_id: str, volume_id: str, group_id: str, size: int) -> None:
        """Snapshot one member (the fence is up), recording the group id and size."""

    def drop(self, snapshot_id: str) -> None:
        """Delete one member snapshot; missing is not an error."""


def check_members(source_volume_ids: Sequence[str], field: str = "source_volume_ids") -> tuple[str, ...]:
    """The members in the order they are fenced and snapshotted (sorted, so every
    caller takes them in one order)."""
    if not source_volume_ids:
        raise InvalidArgument(f"{field} is required (at least one volume)")
    if len(set(source_volume_ids)) != len(source_volume_ids):
        raise InvalidArgument(f"{field} lists a volume twice")
    for vol_id in source_volume_ids:
        validate.volume_id(vol_id)
    return tuple(sorted(source_volume_ids))


def describe(store: GroupStore, group_id: str) -> GroupSnapshot | None:
    found = store.members(group_id)
    if not found:
        return None
    snaps = tuple(sorted((s for s, _ in found), key=lambda s: s.source_volume_id))
    size = max(n for _, n in found)
    return GroupSnapshot(id=group_id, name=snaps[0].name.rpartition("@")[0], snapshots=snaps,
                         created_at=min(s.created_at for s in snaps),
                         ready=len(snaps) == size and all(s.ready for s in snaps))


def create(store: GroupStore, name: str, source_volume_ids: Sequence[str]) -> GroupSnapshot:
    validate.name(name)
    members = check_members(source_volume_ids)
    group_id = naming.group_snapshot_id(name)
    with store.group_lock():
        found = describe(store, group_id)
        if found is not None and found.ready:
            if found.source_volume_ids != members:
                raise AlreadyExists(f"group snapshot {name!r} exists for volumes {', '.join(found.source_volume_ids)}")
            return found
        if found is not None:
            log.warning("interrupted group snapshot: taking the whole set again", group_id=group_id,
                        had=len(found.snapshots))
            _drop_all(store, [s.id for s in found.snapshots])
        for vol_id in members:
            if not store.has_volume(vol_id):
                raise NotFound(f"source volume {vol_id} not found")
        _take_all(store, name, group_id, members)
        made = describe(store, group_id)
    if made is None or not made.ready:
        raise BackendFailure(f"group snapshot {group_id} is incomplete after its create; retry it")
    log.info("group snapshot created", group_id=group_id, members=len(members))
    return made


def _take_all(store: GroupStore, name: str, group_id: str, members: tuple[str, ...]) -> None:
    made: list[str] = []
    try:
        with store.fence(members) as release:
            for vol_id in members:
                member = naming.member_snapshot_name(name, vol_id)
                snap_id = naming.snapshot_id(member)
                made.append(snap_id)
                store.take(member, snap_id, vol_id, group_id, len(members))
                release(vol_id)
    except SluiceError:
        _drop_all(store, made)  # nothing half-created; a failed drop is finished by the retry
        raise


def _drop_all(store: GroupStore, snapshot_ids: Sequence[str]) -> None:
    for snap_id in snapshot_ids:
        try:
            store.drop(snap_id)
        except SluiceError as exc:
            log.warning("member snapshot not deleted (the next try deletes it)", snapshot_id=snap_id,
                        error=str(exc))


def get(store: GroupStore, group_id: str) -> GroupSnapshot:
    validate.group_snapshot_id(group_id)
    found = describe(store, group_id)
    if found is None:
        raise NotFound(f"group snapshot {group_id} not found")
    return found


def delete(store: GroupStore, group_id: str) -> None:
    """Delete every member; a missing group is not an error."""
    try:
        validate.group_snapshot_id(group_id)
    except NotFound:
        return
    with store.group_lock():
        for snap, _ in store.members(group_id):
            store.drop(snap.id)
    log.info("group snapshot deleted", group_id=group_id)
