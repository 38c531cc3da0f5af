"""CSI protobuf messages <-> the plain values the services take and return."""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from csi_driver.capabilities import Capability
from csi_driver.model import ContentSource, GroupSnapshotInfo, SnapshotInfo, VolumeInfo, VolumeStatus
from sluice_common.errors import InvalidArgument
from sluice_proto import csi_pb2 as csi

Mode = csi.VolumeCapability.AccessMode.Mode


def capability(cap: csi.VolumeCapability, field: str = "volume_capability") -> Capability:
    kind = cap.WhichOneof("access_type")
    if kind is None:
        raise InvalidArgument(f"{field}: access_type (block or mount) is required")
    if not cap.HasField("access_mode") or cap.access_mode.mode == Mode.UNKNOWN:
        raise InvalidArgument(f"{field}: access_mode is required")
    mount = cap.mount if kind == "mount" else None
    return Capability(
        access_type=kind, mode=Mode.Name(cap.access_mode.mode),
        fs_type=mount.fs_type if mount else "", mount_flags=tuple(mount.mount_flags) if mount else (),
        volume_mount_group=mount.volume_mount_group if mount else "",
    )


def capabilities(caps, field: str = "volume_capabilities") -> list[Capability]:
    return [capability(c, f"{field}[{i}]") for i, c in enumerate(caps)]


def content_source(src: csi.VolumeContentSource) -> ContentSource | None:
    kind = src.WhichOneof("type")
    if kind == "snapshot":
        if not src.snapshot.snapshot_id:
            raise InvalidArgument("volume_content_source.snapshot.snapshot_id is required")
        return ContentSource("snapshot", src.snapshot.snapshot_id)
    if kind == "volume":
        if not src.volume.volume_id:
            raise InvalidArgument("volume_content_source.volume.volume_id is required")
        return ContentSource("volume", src.volume.volume_id)
    return None


def content_source_pb(src: ContentSource | None) -> csi.VolumeContentSource | None:
    if src is None:
        return None
    if src.kind == "snapshot":
        return csi.VolumeContentSource(snapshot=csi.VolumeContentSource.SnapshotSource(snapshot_id=src.id))
    return csi.VolumeContentSource(volume=csi.VolumeContentSource.VolumeSource(volume_id=src.id))


def topologies(items) -> list[dict[str, str]]:
    return [dict(t.segments) for t in items]


def volume_pb(info: VolumeInfo) -> csi.Volume:
    return csi.Volume(capacity_bytes=info.capacity_bytes, volume_id=info.volume_id,
                      volume_context=dict(info.context), content_source=content_source_pb(info.source),
                      accessible_topology=[csi.Topology(segments=dict(t)) for t in info.topology])


def condition_pb(status: VolumeStatus) -> csi.VolumeCondition:
    return csi.VolumeCondition(abnormal=status.abnormal, message=status.message or "volume is healthy")


def timestamp(when) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def snapshot_pb(info: SnapshotInfo) -> csi.Snapshot:
    return csi.Snapshot(size_bytes=info.size_bytes, snapshot_id=info.snapshot_id,
                        source_volume_id=info.source_volume_id, creation_time=timestamp(info.created_at),
                        ready_to_use=info.ready, group_snapshot_id=info.group_snapshot_id)


def group_snapshot_pb(info: GroupSnapshotInfo) -> csi.VolumeGroupSnapshot:
    return csi.VolumeGroupSnapshot(group_snapshot_id=info.group_snapshot_id,
                                   snapshots=[snapshot_pb(s) for s in info.snapshots],
                                   creation_time=timestamp(info.created_at), ready_to_use=info.ready)


def plain(mapping: Mapping[str, str]) -> dict[str, str]:
    return dict(mapping)
