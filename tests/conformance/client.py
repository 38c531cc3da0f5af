"""A CSI client for the conformance suite: stubs on the driver's socket and request
builders, so each test reads as the CO's call it checks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc

from sluice_proto import csi_pb2 as csi
from sluice_proto import csi_pb2_grpc

MiB, GiB = 1 << 20, 1 << 30
Mode = csi.VolumeCapability.AccessMode.Mode


def mount_cap(mode: str = "SINGLE_NODE_WRITER", fs: str = "ext4") -> csi.VolumeCapability:
    return csi.VolumeCapability(mount=csi.VolumeCapability.MountVolume(fs_type=fs),
                                access_mode=csi.VolumeCapability.AccessMode(mode=Mode.Value(mode)))


def block_cap(mode: str = "SINGLE_NODE_WRITER") -> csi.VolumeCapability:
    return csi.VolumeCapability(block=csi.VolumeCapability.BlockVolume(),
                                access_mode=csi.VolumeCapability.AccessMode(mode=Mode.Value(mode)))


@dataclass
class Csi:
    channel: grpc.Channel

    def __post_init__(self) -> None:
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        self.groups = csi_pb2_grpc.GroupControllerStub(self.channel)

    def create(self, name: str, size: int = 64 * MiB, caps=None, parameters=None, source=None,
               requisite=(), preferred=(), limit: int = 0, mutable=None) -> csi.Volume:
        req = csi.CreateVolumeRequest(
            name=name, capacity_range=csi.CapacityRange(required_bytes=size, limit_bytes=limit),
            volume_capabilities=caps or [mount_cap()], parameters=parameters or {},
            mutable_parameters=mutable or {})
        if source is not None:
            req.volume_content_source.CopyFrom(source)
        for seg in requisite:
            req.accessibility_requirements.requisite.add(segments=seg)
        for seg in preferred:
            req.accessibility_requirements.preferred.add(segments=seg)
        return self.controller.CreateVolume(req, timeout=300).volume

    def create_retrying(self, name: str, **kw) -> csi.Volume:
        """As the CO does: retry while the plugin answers ABORTED (operation in flight)."""
        while True:
            try:
                return self.create(name, **kw)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.ABORTED:
                    raise
                time.sleep(0.05)

    def delete(self, volume_id: str) -> None:
        self.controller.DeleteVolume(csi.DeleteVolumeRequest(volume_id=volume_id), timeout=300)

    def publish(self, volume_id: str, node_id: str, cap=None, readonly: bool = False):
        return self.controller.ControllerPublishVolume(csi.ControllerPublishVolumeRequest(
            volume_id=volume_id, node_id=node_id, volume_capability=cap or mount_cap(),
            readonly=readonly), timeout=120).publish_context

    def unpublish(self, volume_id: str, node_id: str) -> None:
        self.controller.ControllerUnpublishVolume(
            csi.ControllerUnpublishVolumeRequest(volume_id=volume_id, node_id=node_id), timeout=120)

    def modify(self, volume_id: str, mutable: dict[str, str]) -> None:
        self.controller.ControllerModifyVolume(
            csi.ControllerModifyVolumeRequest(volume_id=volume_id, mutable_parameters=mutable), timeout=60)

    def context(self, volume_id: str) -> dict[str, str]:
        got = self.controller.ControllerGetVolume(csi.ControllerGetVolumeRequest(volume_id=volume_id), timeout=60)
        return dict(got.volume.volume_context)

    def snapshot(self, name: str, source_volume_id: str) -> csi.Snapshot:
        return self.controller.CreateSnapshot(
            csi.CreateSnapshotRequest(name=name, source_volume_id=source_volume_id), timeout=300).snapshot

    def group_snapshot(self, name: str, source_volume_ids, parameters=None) -> csi.VolumeGroupSnapshot:
        return self.groups.CreateVolumeGroupSnapshot(csi.CreateVolumeGroupSnapshotRequest(
            name=name, source_volume_ids=list(source_volume_ids), parameters=parameters or {}),
            timeout=300).group_snapshot

    def list_volumes(self, max_entries: int = 0, token: str = ""):
        return self.controller.ListVolumes(
            csi.ListVolumesRequest(max_entries=max_entries, starting_token=token), timeout=120)

    def all_volume_ids(self) -> list[str]:
        return [e.volume.volume_id for e in self.list_volumes().entries]

    def capacity(self, segment=None, parameters=None) -> int:
        req = csi.GetCapacityRequest(volume_capabilities=[mount_cap()], parameters=parameters or {})
        if segment is not None:
            req.accessible_topology.segments.update(segment)
        return self.controller.GetCapacity(req, timeout=60).available_capacity


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def error_of(call) -> grpc.RpcError:
    try:
        call()
    except grpc.RpcError as err:
        return err
    raise AssertionError("the call succeeded")
