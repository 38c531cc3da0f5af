"""CSI Controller: each method converts, calls ControllerService or SnapshotService,
and converts back. Nothing here decides anything."""

from __future__ import annotations

from google.protobuf.wrappers_pb2 import Int64Value

from csi_driver import convert as c
from csi_driver.controller import ControllerService
from csi_driver.snapshots import SnapshotService
from sluice_common.errors import InvalidArgument
from sluice_common.grpc_status import translate
from sluice_proto import csi_pb2 as csi
from sluice_proto import csi_pb2_grpc

RPC = csi.ControllerServiceCapability.RPC
CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME, RPC.PUBLISH_UNPUBLISH_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY,
    RPC.CREATE_DELETE_SNAPSHOT, RPC.LIST_SNAPSHOTS, RPC.CLONE_VOLUME, RPC.PUBLISH_READONLY,
    RPC.EXPAND_VOLUME, RPC.LIST_VOLUMES_PUBLISHED_NODES, RPC.VOLUME_CONDITION, RPC.GET_VOLUME,
    RPC.SINGLE_NODE_MULTI_WRITER, RPC.GET_SNAPSHOT, RPC.MODIFY_VOLUME,
)


class ControllerServicer(csi_pb2_grpc.ControllerServicer):
    def __init__(self, volumes: ControllerService, snapshots: SnapshotService) -> None:
        self.volumes = volumes
        self.snapshots = snapshots

    @translate
    def ControllerGetCapabilities(self, request, context):
        return csi.ControllerGetCapabilitiesResponse(capabilities=[
            csi.ControllerServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES])

    @translate
    def CreateVolume(self, request, context):
        if not request.name:
            raise InvalidArgument("name is required")
        req = request.accessibility_requirements
        info = self.volumes.create_volume(
            request.name, request.capacity_range.required_bytes, request.capacity_range.limit_bytes,
            c.capabilities(request.volume_capabilities), dict(request.parameters),
            c.content_source(request.volume_content_source) if request.HasField("volume_content_source") else None,
            c.topologies(req.requisite), c.topologies(req.preferred), dict(request.mutable_parameters))
        return csi.CreateVolumeResponse(volume=c.volume_pb(info))

    @translate
    def ControllerModifyVolume(self, request, context):
        self.volumes.modify_volume(request.volume_id, dict(request.mutable_parameters))
        return csi.ControllerModifyVolumeResponse()

    @translate
    def DeleteVolume(self, request, context):
        self.volumes.delete_volume(request.volume_id)
        return csi.DeleteVolumeResponse()

    @translate
    def ControllerPublishVolume(self, request, context):
        cap = c.capability(request.volume_capability) if request.HasField("volume_capability") else None
        publish_context = self.volumes.publish(request.volume_id, request.node_id, cap, request.readonly)
        return csi.ControllerPublishVolumeResponse(publish_context=publish_context)

    @translate
    def ControllerUnpublishVolume(self, request, context):
        self.volumes.unpublish(request.volume_id, request.node_id)
        return csi.ControllerUnpublishVolumeResponse()

    @translate
    def ValidateVolumeCapabilities(self, request, context):
        caps = c.capabilities(request.volume_capabilities)
        reason = self.volumes.validate_capabilities(request.volume_id, caps, dict(request.volume_context),
                                                    dict(request.parameters))
        if reason:
            return csi.ValidateVolumeCapabilitiesResponse(message=reason)
        confirmed = csi.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context, volume_capabilities=request.volume_capabilities,
            parameters=request.parameters)
        return csi.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    @translate
    def ListVolumes(self, request, context):
        entries, token = self.volumes.list_volumes(request.max_entries, request.starting_token)
        return csi.ListVolumesResponse(next_token=token, entries=[
            csi.ListVolumesResponse.Entry(
                volume=c.volume_pb(info),
                status=csi.ListVolumesResponse.VolumeStatus(
                    published_node_ids=status.published_node_ids, volume_condition=c.condition_pb(status)))
            for info, status in entries])

    @translate
    def ControllerGetVolume(self, request, context):
        info, status = self.volumes.get_volume(request.volume_id)
        return csi.ControllerGetVolumeResponse(
            volume=c.volume_pb(info),
            status=csi.ControllerGetVolumeResponse.VolumeStatus(
                published_node_ids=status.published_node_ids, volume_condition=c.condition_pb(status)))

    @translate
    def GetCapacity(self, request, context):
        segment = dict(request.accessible_topology.segments) if request.HasField("accessible_topology") else None
        cap = self.volumes.capacity(segment, dict(request.parameters), c.capabilities(request.volume_capabilities))
        return csi.GetCapacityResponse(available_capacity=cap.available_bytes,
                                       maximum_volume_size=Int64Value(value=cap.maximum_volume_size))

    @translate
    def ControllerExpandVolume(self, request, context):
        cap = c.capability(request.volume_capability) if request.HasField("volume_capability") else None
        size, node_expansion = self.volumes.expand_volume(
            request.volume_id, request.capacity_range.required_bytes, request.capacity_range.limit_bytes, cap)
        return csi.ControllerExpandVolumeResponse(capacity_bytes=size, node_expansion_required=node_expansion)

    @translate
    def CreateSnapshot(self, request, context):
        info = self.snapshots.create(request.name, request.source_volume_id, dict(request.parameters))
        return csi.CreateSnapshotResponse(snapshot=c.snapshot_pb(info))

    @translate
    def DeleteSnapshot(self, request, context):
        self.snapshots.delete(request.snapshot_id)
        return csi.DeleteSnapshotResponse()

    @translate
    def ListSnapshots(self, request, context):
        snaps, token = self.snapshots.list(request.max_entries, request.starting_token,
                                           request.snapshot_id, request.source_volume_id)
        return csi.ListSnapshotsResponse(next_token=token, entries=[
            csi.ListSnapshotsResponse.Entry(snapshot=c.snapshot_pb(s)) for s in snaps])

    @translate
    def GetSnapshot(self, request, context):
        return csi.GetSnapshotResponse(snapshot=c.snapshot_pb(self.snapshots.get(request.snapshot_id)))
