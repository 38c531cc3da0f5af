"""The group snapshot algorithm (nvme_target/groups.py) over the in-memory store, with
the fence and each member's snapshot recorded: every member is fenced before any is
snapshotted and released only after its own snapshot, the fence is lifted whatever happens, an interrupted set is taken again
whole under a new fence, and a failure part-way leaves nothing."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from nvme_target import groups, naming
from sluice_common.errors import BackendFailure, FailedPrecondition
from tests.fakes.memory_backend import MemoryBackend, MemoryGroups

MiB = 1 << 20


class Recording(MemoryGroups):
    def __init__(self, backend, fail_on: str = "") -> None:
        super().__init__(backend)
        self.events: list[tuple[str, ...]] = []
        self.fail_on = fail_on

    @contextmanager
    def fence(self, volume_ids):
        self.events.append(("fence", *volume_ids))
        try:
            yield lambda volume_id: self.events.append(("release", volume_id))
        finally:
            self.events.append(("lift",))

    def take(self, member_name, snapshot_id, volume_id, group_id, size):
        if volume_id == self.fail_on:
            raise BackendFailure(f"lvcreate failed for {volume_id}")
        self.events.append(("take", volume_id))
        super().take(member_name, snapshot_id, volume_id, group_id, size)

    def drop(self, snapshot_id):
        self.events.append(("drop", snapshot_id))
        super().drop(snapshot_id)


@pytest.fixture
def backend():
    return MemoryBackend()


def volumes(backend, n):
    return sorted(backend.create_volume(f"shard-{i}", 16 * MiB).id for i in range(n))


def test_every_member_is_fenced_before_any_is_snapshotted_then_lifted(backend):
    vols = volumes(backend, 4)
    store = Recording(backend)
    group = groups.create(store, "ckpt", list(reversed(vols)))
    # each member is released once it has its snapshot; the rest stay fenced until theirs
    assert store.events == [("fence", *vols), *[e for v in vols for e in (("take", v), ("release", v))], ("lift",)]
    assert group.ready and group.source_volume_ids == tuple(vols)
    store.events.clear()
    assert groups.create(store, "ckpt", vols) == group
    assert store.events == []  # a retry of a finished set touches nothing


def test_interrupted_set_is_taken_again_whole(backend):
    vols = volumes(backend, 3)
    group_id = naming.group_snapshot_id("ckpt")
    first = naming.snapshot_id(naming.member_snapshot_name("ckpt", vols[0]))
    MemoryGroups(backend).take(naming.member_snapshot_name("ckpt", vols[0]), first, vols[0], group_id, 3)
    partial = groups.get(MemoryGroups(backend), group_id)
    assert not partial.ready and len(partial.snapshots) == 1  # what a crash after one member leaves
    store = Recording(backend)
    group = groups.create(store, "ckpt", vols)
    assert store.events == [("drop", first), ("fence", *vols),
                            *[e for v in vols for e in (("take", v), ("release", v))], ("lift",)]
    assert group.ready and len(group.snapshots) == 3


def test_failure_part_way_lifts_the_fence_and_leaves_nothing(backend):
    vols = volumes(backend, 3)
    store = Recording(backend, fail_on=vols[1])
    with pytest.raises(BackendFailure):
        groups.create(store, "ckpt", vols)
    first, failed = (naming.snapshot_id(naming.member_snapshot_name("ckpt", v)) for v in vols[:2])
    # the failed member is dropped too, in case the tool made it before failing
    assert store.events == [("fence", *vols), ("take", vols[0]), ("release", vols[0]), ("lift",),
                            ("drop", first), ("drop", failed)]
    assert backend.list_snapshots() == []


def test_a_refused_fence_makes_nothing(backend):
    vols = volumes(backend, 2)

    class Refusing(Recording):
        def fence(self, volume_ids):
            raise FailedPrecondition("cannot fence")

    with pytest.raises(FailedPrecondition):
        groups.create(Refusing(backend), "ckpt", vols)
    assert backend.list_snapshots() == []
