"""The project's own CSI conformance suite for the GroupController (CSI v1.12 volume
group snapshots), over the real gRPC socket: capabilities, required fields and error
codes naming the field, idempotency by name, ALREADY_EXISTS for another set, members
usable as ordinary snapshots (GetSnapshot, ListSnapshots, CreateVolume from one) and
deleted only with their group.

A subclass provides `csi` (a Csi client on a running driver whose targets are empty);
it runs on the host against in-memory targets and in the lab on the real kernel.
"""

from __future__ import annotations

import grpc

from sluice_proto import csi_pb2 as pb
from tests.conformance.client import MiB, code_of, error_of

C = grpc.StatusCode
GROUP_RPC = pb.GroupControllerServiceCapability.RPC
UNKNOWN_GROUP = "local/g-" + "0" * 32


class GroupControllerConformance:
    def test_group_controller_is_advertised(self, csi):
        caps = csi.identity.GetPluginCapabilities(pb.GetPluginCapabilitiesRequest()).capabilities
        assert pb.PluginCapability.Service.GROUP_CONTROLLER_SERVICE in {
            c.service.type for c in caps if c.HasField("service")}
        rpcs = csi.groups.GroupControllerGetCapabilities(pb.GroupControllerGetCapabilitiesRequest()).capabilities
        assert [c.rpc.type for c in rpcs] == [GROUP_RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT]

    def test_group_snapshot_lifecycle(self, csi):
        vols = [csi.create(f"pvc-shard-{i}", size=64 * MiB).volume_id for i in range(3)]
        group = csi.group_snapshot("vgs-ckpt", vols, {"csi.storage.k8s.io/volumegroupsnapshot/name": "x"})
        assert group.ready_to_use and group.group_snapshot_id and group.creation_time.seconds > 0
        assert sorted(s.source_volume_id for s in group.snapshots) == sorted(vols)
        for member in group.snapshots:
            assert member.group_snapshot_id == group.group_snapshot_id and member.ready_to_use
            got = csi.controller.GetSnapshot(pb.GetSnapshotRequest(snapshot_id=member.snapshot_id)).snapshot
            assert got == member
            listed = csi.controller.ListSnapshots(pb.ListSnapshotsRequest(snapshot_id=member.snapshot_id)).entries
            assert [e.snapshot for e in listed] == [member]
        again = csi.group_snapshot("vgs-ckpt", list(reversed(vols)))
        assert again == group  # idempotent by name, whatever the order
        assert code_of(lambda: csi.group_snapshot("vgs-ckpt", vols[:2])) == C.ALREADY_EXISTS
        get = pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=group.group_snapshot_id,
                                               snapshot_ids=[s.snapshot_id for s in group.snapshots])
        assert csi.groups.GetVolumeGroupSnapshot(get).group_snapshot == group
        source = pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(
            snapshot_id=group.snapshots[0].snapshot_id))
        restored = csi.create("pvc-restored", size=64 * MiB, source=source)
        assert restored.content_source == source
        member_delete = pb.DeleteSnapshotRequest(snapshot_id=group.snapshots[0].snapshot_id)
        err = error_of(lambda: csi.controller.DeleteSnapshot(member_delete))
        assert err.code() == C.FAILED_PRECONDITION and "group snapshot" in err.details()
        delete = pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=group.group_snapshot_id,
                                                     snapshot_ids=[s.snapshot_id for s in group.snapshots])
        csi.groups.DeleteVolumeGroupSnapshot(delete)
        csi.groups.DeleteVolumeGroupSnapshot(delete)  # a repeat succeeds
        assert code_of(lambda: csi.groups.GetVolumeGroupSnapshot(get)) == C.NOT_FOUND
        assert csi.controller.ListSnapshots(pb.ListSnapshotsRequest()).entries == []
        for vol in [*vols, restored.volume_id]:
            csi.delete(vol)

    def test_create_errors_name_the_field(self, csi):
        vol = csi.create("pvc-shard-e", size=64 * MiB).volume_id
        cases = [
            (lambda: csi.group_snapshot("", [vol]), C.INVALID_ARGUMENT, "name"),
            (lambda: csi.group_snapshot("vgs-e", []), C.INVALID_ARGUMENT, "source_volume_ids"),
            (lambda: csi.group_snapshot("vgs-e", [vol, vol]), C.INVALID_ARGUMENT, "twice"),
            (lambda: csi.group_snapshot("vgs-e", [vol, "local/v-" + "0" * 32]), C.NOT_FOUND, "not found"),
            (lambda: csi.group_snapshot("vgs-e", ["garbage"]), C.NOT_FOUND, "source_volume_ids[0]"),
            (lambda: csi.group_snapshot("vgs-e", [vol], {"color": "red"}), C.INVALID_ARGUMENT, "parameters"),
        ]
        for call, code, field in cases:
            err = error_of(call)
            assert (err.code(), field in err.details()) == (code, True), err.details()
        assert csi.controller.ListSnapshots(pb.ListSnapshotsRequest()).entries == []
        csi.delete(vol)

    def test_get_and_delete_errors(self, csi):
        get, delete = csi.groups.GetVolumeGroupSnapshot, csi.groups.DeleteVolumeGroupSnapshot
        assert code_of(lambda: get(pb.GetVolumeGroupSnapshotRequest())) == C.INVALID_ARGUMENT
        assert code_of(lambda: delete(pb.DeleteVolumeGroupSnapshotRequest())) == C.INVALID_ARGUMENT
        for missing in (UNKNOWN_GROUP, "garbage", "nosuchtarget/g-" + "0" * 32):
            missing_get = pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=missing)
            assert code_of(lambda req=missing_get: get(req)) == C.NOT_FOUND
            delete(pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=missing))  # OK: nothing to delete
        vol = csi.create("pvc-shard-m", size=64 * MiB).volume_id
        group = csi.group_snapshot("vgs-m", [vol])
        wrong = ["local/s-" + "1" * 32]
        err = error_of(lambda: get(pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=group.group_snapshot_id,
                                                                    snapshot_ids=wrong)))
        assert err.code() == C.INVALID_ARGUMENT and "snapshot_ids" in err.details()
        err = error_of(lambda: delete(pb.DeleteVolumeGroupSnapshotRequest(
            group_snapshot_id=group.group_snapshot_id, snapshot_ids=wrong)))
        assert err.code() == C.INVALID_ARGUMENT and "snapshot_ids" in err.details()
        delete(pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=group.group_snapshot_id))
        csi.delete(vol)
