"""The project's own CSI conformance suite for Identity and Controller, written from
the spec (v1.12): required fields, not-found, already-exists, idempotent repeats,
pagination, a full lifecycle and concurrency, all over the real gRPC socket.

A subclass provides `csi` (a Csi client on a running driver whose targets are empty)
and `node_ids` (two host NQNs). It runs on the host against in-memory targets and in
the lab against target agents on the real kernel.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from sluice_proto import csi_pb2 as pb
from tests.conformance.client import GiB, MiB, block_cap, code_of, error_of, mount_cap

C = grpc.StatusCode
RPC = pb.ControllerServiceCapability.RPC


class IdentityControllerConformance:
    # ---------------------------------------------------------------- identity
    def test_plugin_info(self, csi):
        info = csi.identity.GetPluginInfo(csi_pb2_req("GetPluginInfoRequest"))
        assert info.name == "csi.sluice.dev" and info.vendor_version

    def test_plugin_capabilities(self, csi):
        caps = csi.identity.GetPluginCapabilities(csi_pb2_req("GetPluginCapabilitiesRequest")).capabilities
        services = {c.service.type for c in caps if c.HasField("service")}
        assert {pb.PluginCapability.Service.CONTROLLER_SERVICE,
                pb.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS} <= services
        assert any(c.volume_expansion.type == pb.PluginCapability.VolumeExpansion.ONLINE for c in caps)

    def test_probe_is_ready(self, csi):
        assert csi.identity.Probe(csi_pb2_req("ProbeRequest")).ready.value

    def test_controller_capabilities(self, csi):
        caps = {c.rpc.type for c in csi.controller.ControllerGetCapabilities(
            csi_pb2_req("ControllerGetCapabilitiesRequest")).capabilities}
        assert {RPC.CREATE_DELETE_VOLUME, RPC.PUBLISH_UNPUBLISH_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY,
                RPC.CREATE_DELETE_SNAPSHOT, RPC.LIST_SNAPSHOTS, RPC.CLONE_VOLUME, RPC.EXPAND_VOLUME,
                RPC.GET_VOLUME, RPC.LIST_VOLUMES_PUBLISHED_NODES, RPC.MODIFY_VOLUME} <= caps

    # ------------------------------------------------------- ModifyVolume (QoS)
    def test_modify_changes_the_limits_the_volume_reports_and_publishes(self, csi, node_ids):
        vol = csi.create("pvc-m1", parameters={"qos.readIOPS": "500", "nvme.ctrlLossTmo": "30"})
        assert csi.context(vol.volume_id)["qos.readIOPS"] == "500"
        csi.modify(vol.volume_id, {"qos.readIOPS": "250", "qos.writeBPS": "10Mi"})
        csi.modify(vol.volume_id, {"qos.readIOPS": "250", "qos.writeBPS": "10Mi"})  # a retry converges
        ctx = csi.context(vol.volume_id)
        assert (ctx["qos.readIOPS"], ctx["qos.writeBPS"], ctx["nvme.ctrlLossTmo"]) == ("250", str(10 * MiB), "30")
        published = csi.publish(vol.volume_id, node_ids[0])
        assert (published["qos.readIOPS"], published["qos.writeBPS"]) == ("250", str(10 * MiB))
        assert "qos.writeIOPS" not in published
        csi.modify(vol.volume_id, {"qos.writeBPS": "max"})  # "max" removes a limit
        assert "qos.writeBPS" not in csi.context(vol.volume_id)
        again = csi.create("pvc-m1", parameters={"qos.readIOPS": "500", "nvme.ctrlLossTmo": "30"})
        assert again.volume_context["qos.readIOPS"] == "250"  # a retried create keeps the change
        caps = [mount_cap()]
        valid = csi.controller.ValidateVolumeCapabilities(csi_pb2_req(
            "ValidateVolumeCapabilitiesRequest", volume_id=vol.volume_id, volume_capabilities=caps,
            volume_context=dict(vol.volume_context)))
        assert valid.confirmed.volume_capabilities, "the creation context still validates"
        csi.unpublish(vol.volume_id, node_ids[0])
        csi.delete(vol.volume_id)

    def test_create_takes_mutable_parameters_from_a_volume_attributes_class(self, csi):
        vol = csi.create("pvc-m2", parameters={"qos.readIOPS": "500"},
                         mutable={"qos.readIOPS": "100", "qos.writeIOPS": "50"})
        assert (vol.volume_context["qos.readIOPS"], vol.volume_context["qos.writeIOPS"]) == ("100", "50")
        csi.delete(vol.volume_id)

    @pytest.mark.parametrize("mutable, code, field", [
        ({}, C.INVALID_ARGUMENT, "mutable_parameters"),
        ({"qos.readIOPZ": "1"}, C.INVALID_ARGUMENT, "qos.readIOPZ"),
        ({"nvme.ctrlLossTmo": "30"}, C.INVALID_ARGUMENT, "nvme.ctrlLossTmo"),
        ({"qos.writeBPS": "lots"}, C.INVALID_ARGUMENT, "qos.writeBPS"),
        ({"qos.readIOPS": "0"}, C.INVALID_ARGUMENT, "qos.readIOPS"),
    ])
    def test_modify_refuses_bad_input_and_changes_nothing(self, csi, mutable, code, field):
        vol = csi.create("pvc-m3", parameters={"qos.readIOPS": "500"})
        err = error_of(lambda: csi.modify(vol.volume_id, mutable))
        assert err.code() == code and field in err.details()
        assert csi.context(vol.volume_id)["qos.readIOPS"] == "500"
        csi.delete(vol.volume_id)

    def test_modify_of_a_missing_volume(self, csi):
        vol = csi.create("pvc-m4")
        csi.delete(vol.volume_id)
        assert code_of(lambda: csi.modify(vol.volume_id, {"qos.readIOPS": "1"})) == C.NOT_FOUND
        assert code_of(lambda: csi.modify("", {"qos.readIOPS": "1"})) == C.INVALID_ARGUMENT

    # ------------------------------------------------------------ CreateVolume
    @pytest.mark.parametrize("change, field", [
        ({"name": ""}, "name"),
        ({"caps": [pb.VolumeCapability()]}, "access_type"),
        ({"caps": [mount_cap("MULTI_NODE_MULTI_WRITER")]}, "access mode"),
        ({"caps": [mount_cap("SINGLE_NODE_WRITER", fs="btrfs")]}, "fs_type"),
        ({"parameters": {"qos.readIOPZ": "1"}}, "qos.readIOPZ"),
        ({"parameters": {"qos.readIOPS": "-5"}}, "qos.readIOPS"),
        ({"parameters": {"qos.writeBPS": "lots"}}, "qos.writeBPS"),
        ({"parameters": {"nvme.ctrlLossTmo": "0"}}, "nvme.ctrlLossTmo"),
    ])
    def test_create_refuses_bad_input(self, csi, change, field):
        args = {"name": "pvc-bad", **change}
        err = error_of(lambda: csi.create(**args))
        assert err.code() == C.INVALID_ARGUMENT and field in err.details()
        assert csi.all_volume_ids() == []

    def test_create_needs_capabilities(self, csi):
        err = error_of(lambda: csi.controller.CreateVolume(csi_pb2_req("CreateVolumeRequest", name="pvc-nocap")))
        assert err.code() == C.INVALID_ARGUMENT and "volume_capabilities" in err.details()

    def test_create_capacity_range_errors(self, csi):
        assert code_of(lambda: csi.create("pvc-r1", size=2 * GiB, limit=1 * GiB)) == C.OUT_OF_RANGE
        assert code_of(lambda: csi.create("pvc-r2", size=5 * MiB, limit=5 * MiB)) == C.OUT_OF_RANGE
        assert code_of(lambda: csi.create("pvc-r3", size=1 << 49)) == C.RESOURCE_EXHAUSTED
        assert csi.all_volume_ids() == []

    def test_create_and_repeat(self, csi):
        params = {"qos.readIOPS": "500", "qos.writeBPS": "500Mi", "nvme.ctrlLossTmo": "60",
                  "csi.storage.k8s.io/pvc/name": "model", "csi.storage.k8s.io/pvc/namespace": "ml"}
        vol = csi.create("pvc-c1", size=100 * MiB, parameters=params)
        assert vol.capacity_bytes >= 100 * MiB and vol.volume_id
        assert vol.volume_context["qos.readIOPS"] == "500"
        assert vol.volume_context["qos.writeBPS"] == str(500 * MiB)
        assert vol.volume_context["nvme.ctrlLossTmo"] == "60"
        assert not any(k.startswith("csi.storage.k8s.io/") for k in vol.volume_context)
        assert csi.create("pvc-c1", size=100 * MiB, parameters=params) == vol
        assert code_of(lambda: csi.create("pvc-c1", size=300 * MiB, parameters=params)) == C.ALREADY_EXISTS
        assert code_of(lambda: csi.create("pvc-c1", size=100 * MiB)) == C.ALREADY_EXISTS
        assert csi.all_volume_ids() == [vol.volume_id]

    def test_create_without_range_gets_a_default_size(self, csi):
        vol = csi.controller.CreateVolume(csi_pb2_req("CreateVolumeRequest", name="pvc-default",
                                                      volume_capabilities=[block_cap()])).volume
        assert vol.capacity_bytes == 1 * GiB

    def test_xfs_volumes_are_big_enough_for_mkfs_xfs(self, csi):
        vol = csi.create("pvc-xfs-small", size=64 * MiB, caps=[mount_cap(fs="xfs")])
        assert vol.capacity_bytes >= 300 * MiB
        assert code_of(lambda: csi.create("pvc-xfs-tiny", size=64 * MiB, limit=100 * MiB,
                                          caps=[mount_cap(fs="xfs")])) == C.OUT_OF_RANGE

    def test_create_reports_topology(self, csi):
        vol = csi.create("pvc-topo")
        assert len(vol.accessible_topology) == 1
        assert all(k.startswith("csi.sluice.dev/") for k in vol.accessible_topology[0].segments)

    # ------------------------------------------------------------ DeleteVolume
    def test_delete(self, csi):
        assert code_of(lambda: csi.delete("")) == C.INVALID_ARGUMENT
        csi.delete("no-such-target/v-" + "0" * 32)
        csi.delete("garbage")
        vol = csi.create("pvc-d1")
        csi.delete(vol.volume_id)
        csi.delete(vol.volume_id)
        assert csi.all_volume_ids() == []

    # ------------------------------------------------------------- publishing
    def test_publish_required_fields_and_not_found(self, csi, node_ids):
        vol = csi.create("pvc-p1")
        ctl = csi.controller
        req = csi_pb2_req
        assert code_of(lambda: ctl.ControllerPublishVolume(req(
            "ControllerPublishVolumeRequest", node_id=node_ids[0], volume_capability=mount_cap()))) == C.INVALID_ARGUMENT
        assert code_of(lambda: ctl.ControllerPublishVolume(req(
            "ControllerPublishVolumeRequest", volume_id=vol.volume_id, volume_capability=mount_cap()))) == C.INVALID_ARGUMENT
        assert code_of(lambda: ctl.ControllerPublishVolume(req(
            "ControllerPublishVolumeRequest", volume_id=vol.volume_id, node_id=node_ids[0]))) == C.INVALID_ARGUMENT
        unknown = vol.volume_id.split("/")[0] + "/v-" + "0" * 32
        assert code_of(lambda: csi.publish(unknown, node_ids[0])) == C.NOT_FOUND
        assert code_of(lambda: csi.publish(vol.volume_id, "some-fake-node-id")) == C.NOT_FOUND

    def test_publish_unpublish_cycle(self, csi, node_ids):
        a, b = node_ids
        vol = csi.create("pvc-p2")
        ctx = csi.publish(vol.volume_id, a)
        assert ctx["nvme.transport"] == "tcp" and ctx["nvme.subnqn"].startswith("nqn.")
        assert ctx["nvme.portals"] and ctx["nvme.nsUUID"] and ctx["readonly"] == "false"
        assert csi.publish(vol.volume_id, a) == ctx
        assert code_of(lambda: csi.publish(vol.volume_id, b)) == C.FAILED_PRECONDITION
        assert code_of(lambda: csi.delete(vol.volume_id)) == C.FAILED_PRECONDITION
        got = csi.controller.ControllerGetVolume(csi_pb2_req("ControllerGetVolumeRequest", volume_id=vol.volume_id))
        assert list(got.status.published_node_ids) == [a]
        csi.unpublish(vol.volume_id, a)
        csi.unpublish(vol.volume_id, a)
        csi.unpublish(vol.volume_id, b)
        csi.unpublish(vol.volume_id.split("/")[0] + "/v-" + "0" * 32, a)
        assert code_of(lambda: csi.unpublish("", a)) == C.INVALID_ARGUMENT
        csi.delete(vol.volume_id)

    def test_read_only_many(self, csi, node_ids):
        a, b = node_ids
        cap = mount_cap("MULTI_NODE_READER_ONLY")
        vol = csi.create("pvc-model", caps=[cap])
        assert csi.publish(vol.volume_id, a, cap)["readonly"] == "true"
        csi.publish(vol.volume_id, b, cap, readonly=True)
        got = csi.controller.ControllerGetVolume(csi_pb2_req("ControllerGetVolumeRequest", volume_id=vol.volume_id))
        assert sorted(got.status.published_node_ids) == sorted([a, b])
        csi.unpublish(vol.volume_id, "")
        csi.delete(vol.volume_id)

    # ----------------------------------------------------------- validation
    def test_validate_volume_capabilities(self, csi):
        vol = csi.create("pvc-v1")
        ctl, req = csi.controller, csi_pb2_req
        assert code_of(lambda: ctl.ValidateVolumeCapabilities(req(
            "ValidateVolumeCapabilitiesRequest", volume_capabilities=[mount_cap()]))) == C.INVALID_ARGUMENT
        assert code_of(lambda: ctl.ValidateVolumeCapabilities(req(
            "ValidateVolumeCapabilitiesRequest", volume_id=vol.volume_id))) == C.INVALID_ARGUMENT
        assert code_of(lambda: ctl.ValidateVolumeCapabilities(req(
            "ValidateVolumeCapabilitiesRequest", volume_id=vol.volume_id.split("/")[0] + "/v-" + "0" * 32,
            volume_capabilities=[mount_cap()]))) == C.NOT_FOUND
        ok = ctl.ValidateVolumeCapabilities(req("ValidateVolumeCapabilitiesRequest", volume_id=vol.volume_id,
                                                volume_capabilities=[mount_cap(), block_cap()]))
        assert ok.HasField("confirmed") and len(ok.confirmed.volume_capabilities) == 2
        no = ctl.ValidateVolumeCapabilities(req("ValidateVolumeCapabilitiesRequest", volume_id=vol.volume_id,
                                                volume_capabilities=[mount_cap("MULTI_NODE_MULTI_WRITER")]))
        assert not no.HasField("confirmed") and no.message

    # ------------------------------------------------------------- listing
    def test_list_volumes_pages(self, csi, node_ids):
        made = sorted(csi.create(f"pvc-l{i}").volume_id for i in range(5))
        csi.publish(made[0], node_ids[0])
        seen, token = [], ""
        for _ in range(5):
            page = csi.list_volumes(max_entries=2, token=token)
            assert len(page.entries) <= 2
            seen += [e.volume.volume_id for e in page.entries]
            token = page.next_token
            if not token:
                break
        assert seen == made
        first = next(e for e in csi.list_volumes().entries if e.volume.volume_id == made[0])
        assert list(first.status.published_node_ids) == [node_ids[0]]
        assert code_of(lambda: csi.list_volumes(token="bogus-token")) == C.ABORTED
        assert code_of(lambda: csi.list_volumes(max_entries=-1)) == C.INVALID_ARGUMENT
        csi.unpublish(made[0], node_ids[0])

    # ------------------------------------------------------------- capacity
    def test_capacity(self, csi):
        before = csi.capacity()
        vol = csi.create("pvc-cap", size=256 * MiB)
        assert csi.capacity() == before - vol.capacity_bytes
        segment = dict(vol.accessible_topology[0].segments)
        assert csi.capacity(segment) > 0
        assert csi.capacity({k: "nowhere" for k in segment}) == 0
        assert csi.capacity(parameters={"pool": "no-such-pool"}) == 0
        assert code_of(lambda: csi.capacity(parameters={"bogus": "1"})) == C.INVALID_ARGUMENT

    # ---------------------------------------------------------- get / expand
    def test_get_volume(self, csi):
        assert code_of(lambda: csi.controller.ControllerGetVolume(csi_pb2_req(
            "ControllerGetVolumeRequest", volume_id="local/v-" + "0" * 32))) == C.NOT_FOUND
        vol = csi.create("pvc-g1")
        got = csi.controller.ControllerGetVolume(csi_pb2_req("ControllerGetVolumeRequest", volume_id=vol.volume_id))
        assert got.volume == vol and not got.status.volume_condition.abnormal

    def test_expand(self, csi):
        ctl, req = csi.controller, csi_pb2_req
        vol = csi.create("pvc-e1", size=64 * MiB)
        rng = csi_pb2_req("CapacityRange", required_bytes=128 * MiB)
        assert code_of(lambda: ctl.ControllerExpandVolume(req("ControllerExpandVolumeRequest",
                                                              capacity_range=rng))) == C.INVALID_ARGUMENT
        assert code_of(lambda: ctl.ControllerExpandVolume(req("ControllerExpandVolumeRequest",
                                                              volume_id=vol.volume_id))) == C.INVALID_ARGUMENT
        assert code_of(lambda: ctl.ControllerExpandVolume(req(
            "ControllerExpandVolumeRequest", volume_id="local/v-" + "0" * 32, capacity_range=rng))) == C.NOT_FOUND
        grown = ctl.ControllerExpandVolume(req("ControllerExpandVolumeRequest", volume_id=vol.volume_id,
                                               capacity_range=rng, volume_capability=mount_cap()))
        assert grown.capacity_bytes >= 128 * MiB and grown.node_expansion_required
        again = ctl.ControllerExpandVolume(req("ControllerExpandVolumeRequest", volume_id=vol.volume_id,
                                               capacity_range=rng, volume_capability=block_cap()))
        assert again.capacity_bytes == grown.capacity_bytes and not again.node_expansion_required
        shrink = csi_pb2_req("CapacityRange", required_bytes=32 * MiB)
        assert code_of(lambda: ctl.ControllerExpandVolume(req(
            "ControllerExpandVolumeRequest", volume_id=vol.volume_id, capacity_range=shrink))) == C.OUT_OF_RANGE

    # ------------------------------------------------------------- snapshots
    def test_snapshots(self, csi):
        ctl, req = csi.controller, csi_pb2_req
        vol = csi.create("pvc-s1")
        other = csi.create("pvc-s2")
        assert code_of(lambda: csi.snapshot("", vol.volume_id)) == C.INVALID_ARGUMENT
        assert code_of(lambda: csi.snapshot("snap-1", "")) == C.INVALID_ARGUMENT
        assert code_of(lambda: csi.snapshot("snap-1", "local/v-" + "0" * 32)) == C.NOT_FOUND
        snap = csi.snapshot("snap-1", vol.volume_id)
        assert snap.source_volume_id == vol.volume_id and snap.ready_to_use and snap.size_bytes == vol.capacity_bytes
        assert snap.creation_time.seconds > 0
        assert csi.snapshot("snap-1", vol.volume_id) == snap
        assert code_of(lambda: csi.snapshot("snap-1", other.volume_id)) == C.ALREADY_EXISTS
        snap2 = csi.snapshot("snap-2", other.volume_id)
        listed = ctl.ListSnapshots(req("ListSnapshotsRequest"))
        assert sorted(e.snapshot.snapshot_id for e in listed.entries) == sorted([snap.snapshot_id, snap2.snapshot_id])
        by_id = ctl.ListSnapshots(req("ListSnapshotsRequest", snapshot_id=snap.snapshot_id))
        assert [e.snapshot for e in by_id.entries] == [snap]
        by_src = ctl.ListSnapshots(req("ListSnapshotsRequest", source_volume_id=other.volume_id))
        assert [e.snapshot for e in by_src.entries] == [snap2]
        assert not ctl.ListSnapshots(req("ListSnapshotsRequest", snapshot_id="local/s-" + "0" * 32)).entries
        page = ctl.ListSnapshots(req("ListSnapshotsRequest", max_entries=1))
        assert len(page.entries) == 1 and page.next_token
        rest = ctl.ListSnapshots(req("ListSnapshotsRequest", max_entries=1, starting_token=page.next_token))
        assert len(rest.entries) == 1 and not rest.next_token
        assert code_of(lambda: ctl.ListSnapshots(req("ListSnapshotsRequest", starting_token="x"))) == C.ABORTED
        assert ctl.GetSnapshot(req("GetSnapshotRequest", snapshot_id=snap.snapshot_id)).snapshot == snap
        assert code_of(lambda: ctl.GetSnapshot(req("GetSnapshotRequest",
                                                   snapshot_id="local/s-" + "0" * 32))) == C.NOT_FOUND
        for s in (snap, snap2, snap):
            ctl.DeleteSnapshot(req("DeleteSnapshotRequest", snapshot_id=s.snapshot_id))
        ctl.DeleteSnapshot(req("DeleteSnapshotRequest", snapshot_id="garbage"))
        assert code_of(lambda: ctl.DeleteSnapshot(req("DeleteSnapshotRequest"))) == C.INVALID_ARGUMENT

    def test_volume_from_snapshot_and_clone(self, csi):
        vol = csi.create("pvc-src", size=64 * MiB)
        snap = csi.snapshot("snap-src", vol.volume_id)
        from_snap = csi_pb2_req("VolumeContentSource",
                                snapshot=csi_pb2_req("VolumeContentSource.SnapshotSource", snapshot_id=snap.snapshot_id))
        restored = csi.create("pvc-restored", size=128 * MiB, source=from_snap)
        assert restored.content_source == from_snap and restored.capacity_bytes >= 128 * MiB
        assert csi.create("pvc-restored", size=128 * MiB, source=from_snap) == restored
        from_vol = csi_pb2_req("VolumeContentSource",
                               volume=csi_pb2_req("VolumeContentSource.VolumeSource", volume_id=vol.volume_id))
        clone = csi.create("pvc-clone", size=64 * MiB, source=from_vol)
        assert clone.content_source == from_vol
        missing = csi_pb2_req("VolumeContentSource", snapshot=csi_pb2_req(
            "VolumeContentSource.SnapshotSource", snapshot_id=snap.snapshot_id.split("/")[0] + "/s-" + "0" * 32))
        assert code_of(lambda: csi.create("pvc-none", source=missing)) == C.NOT_FOUND
        assert code_of(lambda: csi.create("pvc-small", size=16 * MiB, source=from_vol)) == C.OUT_OF_RANGE

    # ------------------------------------------------------------ lifecycle
    def test_full_lifecycle_leaves_nothing(self, csi, node_ids):
        vol = csi.create("pvc-life", size=64 * MiB, parameters={"qos.readIOPS": "100"})
        csi.publish(vol.volume_id, node_ids[0])
        snap = csi.snapshot("snap-life", vol.volume_id)
        csi.unpublish(vol.volume_id, node_ids[0])
        clone = csi.create("pvc-life-clone", size=64 * MiB, source=csi_pb2_req(
            "VolumeContentSource", snapshot=csi_pb2_req("VolumeContentSource.SnapshotSource",
                                                         snapshot_id=snap.snapshot_id)))
        csi.controller.DeleteSnapshot(csi_pb2_req("DeleteSnapshotRequest", snapshot_id=snap.snapshot_id))
        csi.delete(clone.volume_id)
        csi.delete(vol.volume_id)
        assert csi.all_volume_ids() == []
        assert not csi.controller.ListSnapshots(csi_pb2_req("ListSnapshotsRequest")).entries

    # ---------------------------------------------------------- concurrency
    def test_parallel_creates_of_one_name_make_one_volume(self, csi):
        with ThreadPoolExecutor(50) as pool:
            vols = list(pool.map(lambda _: csi.create_retrying("pvc-race", size=32 * MiB), range(50)))
        assert len({v.volume_id for v in vols}) == 1
        assert csi.all_volume_ids() == [vols[0].volume_id]

    def test_parallel_create_delete_of_many_names_leaks_nothing(self, csi):
        with ThreadPoolExecutor(8) as pool:
            vols = list(pool.map(lambda i: csi.create_retrying(f"pvc-many-{i}", size=16 * MiB), range(8)))
            list(pool.map(lambda v: csi.delete(v.volume_id), vols))
        assert csi.all_volume_ids() == []


def csi_pb2_req(message: str, **fields):
    cls = pb
    for part in message.split("."):
        cls = getattr(cls, part)
    return cls(**fields)
