"""Node service conformance that needs no attached volume: capabilities, identity,
required fields, and the calls the spec says must succeed on unknown paths. A subclass
provides `node` (a Csi client on a driver serving the Node service)."""

from __future__ import annotations

import grpc

from sluice_proto import csi_pb2 as pb
from tests.conformance.client import code_of, mount_cap

C = grpc.StatusCode
RPC = pb.NodeServiceCapability.RPC
VOL = "local/v-" + "a" * 32


class NodeConformance:
    def test_capabilities(self, node):
        caps = {c.rpc.type for c in node.node.NodeGetCapabilities(pb.NodeGetCapabilitiesRequest()).capabilities}
        assert caps == {RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME,
                        RPC.VOLUME_CONDITION, RPC.SINGLE_NODE_MULTI_WRITER}

    def test_info_is_the_host_nqn_and_topology(self, node):
        info = node.node.NodeGetInfo(pb.NodeGetInfoRequest())
        assert info.node_id.startswith("nqn.2014-08.org.nvmexpress:uuid:")
        assert info.max_volumes_per_node > 0
        assert all(k.startswith("csi.sluice.dev/") for k in info.accessible_topology.segments)
        assert node.node.NodeGetInfo(pb.NodeGetInfoRequest()).node_id == info.node_id

    def test_stage_required_fields(self, node, tmp_path):
        ctx = {"nvme.portals": "127.0.0.1:4420", "nvme.subnqn": "nqn.x", "nvme.nsUUID": "u"}
        stage = node.node.NodeStageVolume
        full = dict(volume_id=VOL, publish_context=ctx, staging_target_path=str(tmp_path / "s"),
                    volume_capability=mount_cap())
        for missing in ("volume_id", "staging_target_path", "volume_capability"):
            args = {k: v for k, v in full.items() if k != missing}
            assert code_of(lambda a=args: stage(pb.NodeStageVolumeRequest(**a))) == C.INVALID_ARGUMENT, missing
        no_ctx = {k: v for k, v in full.items() if k != "publish_context"}
        assert code_of(lambda: stage(pb.NodeStageVolumeRequest(**no_ctx))) == C.INVALID_ARGUMENT
        bad_mode = dict(full, volume_capability=mount_cap("MULTI_NODE_MULTI_WRITER"))
        assert code_of(lambda: stage(pb.NodeStageVolumeRequest(**bad_mode))) == C.INVALID_ARGUMENT

    def test_publish_required_fields_and_unstaged_volume(self, node, tmp_path):
        pub = node.node.NodePublishVolume
        full = dict(volume_id=VOL, staging_target_path=str(tmp_path / "s"), target_path=str(tmp_path / "t"),
                    volume_capability=mount_cap())
        for missing in ("volume_id", "staging_target_path", "target_path", "volume_capability"):
            args = {k: v for k, v in full.items() if k != missing}
            assert code_of(lambda a=args: pub(pb.NodePublishVolumeRequest(**a))) == C.INVALID_ARGUMENT, missing
        assert code_of(lambda: pub(pb.NodePublishVolumeRequest(**full))) == C.FAILED_PRECONDITION

    def test_unpublish_and_unstage_of_unknown_paths_succeed(self, node, tmp_path):
        node.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=VOL, target_path=str(tmp_path / "t")))
        node.node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=VOL,
                                                                staging_target_path=str(tmp_path / "s")))
        assert code_of(lambda: node.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(
            target_path=str(tmp_path / "t")))) == C.INVALID_ARGUMENT
        assert code_of(lambda: node.node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(
            volume_id=VOL))) == C.INVALID_ARGUMENT

    def test_stats_and_expand_of_unknown_volumes(self, node, tmp_path):
        stats = node.node.NodeGetVolumeStats
        assert code_of(lambda: stats(pb.NodeGetVolumeStatsRequest(volume_id=VOL,
                                                                   volume_path=str(tmp_path)))) == C.NOT_FOUND
        assert code_of(lambda: stats(pb.NodeGetVolumeStatsRequest(volume_path=str(tmp_path)))) == C.INVALID_ARGUMENT
        assert code_of(lambda: node.node.NodeExpandVolume(pb.NodeExpandVolumeRequest(
            volume_id=VOL, volume_path=str(tmp_path)))) == C.NOT_FOUND
