"""GroupSnapshotService across two targets: one fence per target, so a set spread over
targets is refused naming the field, and a name taken on one target is ALREADY_EXISTS
on another."""

from __future__ import annotations

import pytest

from csi_driver.groups import GroupSnapshotService
from csi_driver.locks import InFlight
from csi_driver.targets import Target, TargetConfig, Targets
from sluice_common.errors import AlreadyExists, InvalidArgument
from tests.fakes.memory_backend import MemoryBackend

MiB = 1 << 20


@pytest.fixture
def two():
    targets = Targets([Target(TargetConfig(id=name), MemoryBackend()) for name in ("a", "b")])
    for target in targets:
        target.healthy()
    return targets, GroupSnapshotService(targets, InFlight())


def volume(targets, target_id, name):
    target = targets.get(target_id, target_id)
    return f"{target_id}/{target.backend.create_volume(name, 16 * MiB).id}"


def test_members_on_two_targets_are_refused(two):
    targets, groups = two
    ids = [volume(targets, "a", "shard-0"), volume(targets, "b", "shard-1")]
    with pytest.raises(InvalidArgument, match="source_volume_ids: the volumes are on targets a, b"):
        groups.create("ckpt", ids, {})
    assert all(t.backend.list_snapshots() == [] for t in targets)


def test_a_name_taken_on_one_target_is_taken_on_all(two):
    targets, groups = two
    made = groups.create("ckpt", [volume(targets, "a", "shard-0")], {})
    assert made.group_snapshot_id.startswith("a/g-")
    assert made.snapshots[0].group_snapshot_id == made.group_snapshot_id
    with pytest.raises(AlreadyExists, match="exists on target a"):
        groups.create("ckpt", [volume(targets, "b", "shard-1")], {})
    assert groups.get(made.group_snapshot_id, []) == made


def test_group_requests_are_logged_without_their_secrets():
    from csi_driver.redact import loggable
    from sluice_proto import csi_pb2 as csi
    for request in (csi.CreateVolumeGroupSnapshotRequest(name="n", secrets={"token": "s3cret"}),
                    csi.DeleteVolumeGroupSnapshotRequest(group_snapshot_id="a/g", secrets={"token": "s3cret"}),
                    csi.GetVolumeGroupSnapshotRequest(group_snapshot_id="a/g", secrets={"token": "s3cret"})):
        logged = loggable(request)
        assert logged["secrets"] == "<1 redacted>" and "s3cret" not in str(logged)
