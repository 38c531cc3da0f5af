"""CSI GroupController: volume group snapshots. Each method converts, calls
GroupSnapshotService and converts back."""

from __future__ import annotations

from csi_driver import convert as c
from csi_driver.groups import GroupSnapshotService
from sluice_common.grpc_status import translate
from sluice_proto import csi_pb2 as csi
from sluice_proto import csi_pb2_grpc

RPC = csi.GroupControllerServiceCapability.RPC
CAPABILITIES = (RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT,)


class GroupControllerServicer(csi_pb2_grpc.GroupControllerServicer):
    def __init__(self, groups: GroupSnapshotService) -> None:
        self.groups = groups

    @translate
    def GroupControllerGetCapabilities(self, request, context):
        return csi.GroupControllerGetCapabilitiesResponse(capabilities=[
            csi.GroupControllerServiceCapability(rpc=RPC(type=t)) for t in CAPABILITIES])

    @translate
    def CreateVolumeGroupSnapshot(self, request, context):
        info = self.groups.create(request.name, list(request.source_volume_ids), dict(request.parameters))
        return csi.CreateVolumeGroupSnapshotResponse(group_snapshot=c.group_snapshot_pb(info))

    @translate
    def DeleteVolumeGroupSnapshot(self, request, context):
        self.groups.delete(request.group_snapshot_id, list(request.snapshot_ids))
        return csi.DeleteVolumeGroupSnapshotResponse()

    @translate
    def GetVolumeGroupSnapshot(self, request, context):
        info = self.groups.get(request.group_snapshot_id, list(request.snapshot_ids))
        return csi.GetVolumeGroupSnapshotResponse(group_snapshot=c.group_snapshot_pb(info))
