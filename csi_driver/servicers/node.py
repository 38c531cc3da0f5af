"""CSI Node: each method converts, calls NodeService, converts back."""

from __future__ import annotations

from csi_driver import convert as c
from csi_driver.node.service import NodeService
from sluice_common.grpc_status import translate
from sluice_proto import csi_pb2 as csi
from sluice_proto import csi_pb2_grpc

RPC = csi.NodeServiceCapability.RPC
CAPABILITIES = (RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME, RPC.VOLUME_CONDITION,
                RPC.SINGLE_NODE_MULTI_WRITER)


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(self, node: NodeService) -> None:
        self.node = node

    @translate
    def NodeGetCapabilities(self, request, context):
        return csi.NodeGetCapabilitiesResponse(capabilities=[
            csi.NodeServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES])

    @translate
    def NodeGetInfo(self, request, context):
        node_id, max_volumes, topology = self.node.info()
        return csi.NodeGetInfoResponse(node_id=node_id, max_volumes_per_node=max_volumes,
                                       accessible_topology=csi.Topology(segments=dict(topology)))

    @translate
    def NodeStageVolume(self, request, context):
        cap = c.capability(request.volume_capability) if request.HasField("volume_capability") else None
        self.node.stage(request.volume_id, dict(request.publish_context), request.staging_target_path, cap,
                        dict(request.volume_context))
        return csi.NodeStageVolumeResponse()

    @translate
    def NodeUnstageVolume(self, request, context):
        self.node.unstage(request.volume_id, request.staging_target_path)
        return csi.NodeUnstageVolumeResponse()

    @translate
    def NodePublishVolume(self, request, context):
        cap = c.capability(request.volume_capability) if request.HasField("volume_capability") else None
        self.node.publish(request.volume_id, request.staging_target_path, request.target_path, cap,
                          request.readonly, dict(request.volume_context))
        return csi.NodePublishVolumeResponse()

    @translate
    def NodeUnpublishVolume(self, request, context):
        self.node.unpublish(request.volume_id, request.target_path)
        return csi.NodeUnpublishVolumeResponse()

    @translate
    def NodeGetVolumeStats(self, request, context):
        stats = self.node.stats(request.volume_id, request.volume_path)
        unit = csi.VolumeUsage.Unit
        return csi.NodeGetVolumeStatsResponse(
            usage=[csi.VolumeUsage(total=u.total, available=u.available, used=u.used, unit=unit.Value(u.unit))
                   for u in stats.usage],
            volume_condition=csi.VolumeCondition(abnormal=stats.abnormal, message=stats.message))

    @translate
    def NodeExpandVolume(self, request, context):
        size = self.node.expand(request.volume_id, request.volume_path, request.capacity_range.required_bytes)
        return csi.NodeExpandVolumeResponse(capacity_bytes=size)
