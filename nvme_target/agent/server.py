"""The TargetAgent gRPC servicer: validate nothing itself, call the backend, translate
typed errors. Every method is one line of conversion around one backend call."""

from __future__ import annotations

import threading

from nvme_target.agent import convert as c
from nvme_target.agent.protection import Protection
from nvme_target.backend import Backend
from nvme_target.model import QoS, TargetInfo
from sluice_common.grpc_status import translate
from sluice_proto import target_pb2 as pb
from sluice_proto import target_pb2_grpc


class TargetAgentServicer(target_pb2_grpc.TargetAgentServicer):
    def __init__(self, backend: Backend, info: TargetInfo, protection: Protection | None = None) -> None:
        self.backend = backend
        self.info = info
        self.protection = protection

    @translate
    def GetInfo(self, request, context):
        return c.info_pb(self.info)

    @translate
    def CheckHealth(self, request, context):
        return c.health_pb(self.backend.health())

    @translate
    def CreateVolume(self, request, context):
        source = c.source(request.source if request.HasField("source") else None)
        return c.volume_pb(self.backend.create_volume(request.name, request.size_bytes,
                                                      dict(request.metadata), source))

    @translate
    def GetVolume(self, request, context):
        return c.volume_pb(self.backend.get_volume(request.volume_id))

    @translate
    def FindVolume(self, request, context):
        vol = self.backend.find_volume(request.name)
        return pb.FindVolumeResponse(volume=c.volume_pb(vol) if vol else None)

    @translate
    def ListVolumes(self, request, context):
        vols = self.backend.list_volumes(request.start_after, request.limit)
        return pb.ListVolumesResponse(volumes=[c.volume_pb(v) for v in vols])

    @translate
    def DeleteVolume(self, request, context):
        self.backend.delete_volume(request.volume_id, unexport=request.unexport)
        return pb.Empty()

    @translate
    def ExpandVolume(self, request, context):
        return c.volume_pb(self.backend.expand_volume(request.volume_id, request.size_bytes))

    @translate
    def SetQoS(self, request, context):
        return c.volume_pb(self.backend.set_qos(request.volume_id, c.qos(request.qos) or QoS()))

    @translate
    def FindName(self, request, context):
        vol, placed_on = self.backend.find_name(request.name)
        return pb.FindNameResponse(volume=c.volume_pb(vol) if vol else None, placed_on=placed_on)

    @translate
    def PointNames(self, request, context):
        self.backend.point_names(dict(request.pointers))
        return pb.Empty()

    @translate
    def Resync(self, request, context):
        self.backend.resync()
        return pb.Empty()

    def WatchVolumes(self, request, context):
        """A stream: errors inside it end the stream and the node reconnects."""
        stop = threading.Event()
        context.add_callback(stop.set)  # the node went away or cancelled
        decorate = self.protection.decorate if self.protection is not None else None
        for vol in self.backend.watch_volumes(list(request.volume_ids), stop, decorate=decorate):
            yield c.volume_pb(vol)

    @translate
    def ReportIO(self, request, context):
        if self.protection is not None:
            self.protection.report(request.host_nqn, c.io_reports(request))
        return pb.Empty()

    @translate
    def CreateSnapshot(self, request, context):
        return c.snapshot_pb(self.backend.create_snapshot(request.name, request.source_volume_id))

    @translate
    def GetSnapshot(self, request, context):
        return c.snapshot_pb(self.backend.get_snapshot(request.snapshot_id))

    @translate
    def FindSnapshot(self, request, context):
        snap = self.backend.find_snapshot(request.name)
        return pb.FindSnapshotResponse(snapshot=c.snapshot_pb(snap) if snap else None)

    @translate
    def ListSnapshots(self, request, context):
        snaps = self.backend.list_snapshots(request.source_volume_id or None)
        return pb.ListSnapshotsResponse(snapshots=[c.snapshot_pb(s) for s in snaps])

    @translate
    def DeleteSnapshot(self, request, context):
        self.backend.delete_snapshot(request.snapshot_id)
        return pb.Empty()

    @translate
    def CreateGroupSnapshot(self, request, context):
        return c.group_snapshot_pb(self.backend.create_group_snapshot(request.name, list(request.source_volume_ids)))

    @translate
    def GetGroupSnapshot(self, request, context):
        return c.group_snapshot_pb(self.backend.get_group_snapshot(request.group_snapshot_id))

    @translate
    def DeleteGroupSnapshot(self, request, context):
        self.backend.delete_group_snapshot(request.group_snapshot_id)
        return pb.Empty()

    @translate
    def GetCapacity(self, request, context):
        return c.capacity_pb(self.backend.capacity())

    @translate
    def ExportVolume(self, request, context):
        return c.export_pb(self.backend.export_volume(request.volume_id, list(request.hosts)))

    @translate
    def AddHost(self, request, context):
        return c.export_pb(self.backend.add_host(request.volume_id, request.host_nqn, request.readonly,
                                                 request.auth or "none"))

    @translate
    def GetHostCredentials(self, request, context):
        creds = self.backend.host_credentials(request.volume_id, request.host_nqn)
        return pb.HostCredentials(mode=creds.mode, secret=creds.secret, ctrl_secret=creds.ctrl_secret)

    @translate
    def RemoveHost(self, request, context):
        return c.maybe_export_pb(self.backend.remove_host(request.volume_id, request.host_nqn))

    @translate
    def UnexportVolume(self, request, context):
        self.backend.unexport_volume(request.volume_id)
        return pb.Empty()

    @translate
    def GetExport(self, request, context):
        return c.maybe_export_pb(self.backend.get_export(request.volume_id))

    @translate
    def ListExports(self, request, context):
        exports = self.backend.list_exports(list(request.volume_ids) if request.filtered else None)
        return pb.ListExportsResponse(exports=[c.export_pb(x) for x in exports])
