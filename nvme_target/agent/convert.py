"""Backend values <-> target.proto messages. Nothing else touches the wire types."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, UTC

from nvme_target.model import (
    POLICY_KEYS, QOS_KEYS, Capacity, Export, GroupSnapshot, Health, Portal, IoReport, QoS, Snapshot, Source, TargetInfo, Volume,
)
from sluice_proto import target_pb2 as pb


def portal_pb(p: Portal) -> pb.Portal:
    return pb.Portal(traddr=p.traddr, trsvcid=p.trsvcid, adrfam=p.adrfam)


def portal(m: pb.Portal) -> Portal:
    return Portal(traddr=m.traddr, trsvcid=m.trsvcid, adrfam=m.adrfam)  # type: ignore[arg-type]


def source_pb(s: Source | None) -> pb.Source | None:
    return pb.Source(kind=s.kind, id=s.id) if s else None


def source(m: pb.Source | None) -> Source | None:
    return Source(kind=m.kind, id=m.id) if m is not None and m.kind else None  # type: ignore[arg-type]


NUMBERS = (*QOS_KEYS.values(), *POLICY_KEYS.values())


def qos_pb(q: QoS | None) -> pb.QoS | None:
    if q is None:
        return None
    return pb.QoS(**{attr: getattr(q, attr) for attr in NUMBERS if getattr(q, attr) is not None},
                  qos_class=q.qos_class or "")


def qos(m: pb.QoS | None) -> QoS | None:
    if m is None:
        return None
    return QoS(**{attr: getattr(m, attr) for attr in NUMBERS if m.HasField(attr)}, qos_class=m.qos_class or None)


def volume_pb(v: Volume) -> pb.Volume:
    return pb.Volume(id=v.id, name=v.name, size_bytes=v.size_bytes, metadata=dict(v.metadata),
                     source=source_pb(v.source), qos=qos_pb(v.qos), condition=v.condition,
                     ceiling=qos_pb(v.ceiling), ceiling_reason=v.ceiling_reason)


def volume(m: pb.Volume) -> Volume:
    return Volume(id=m.id, name=m.name, size_bytes=m.size_bytes, metadata=dict(m.metadata),
                  source=source(m.source if m.HasField("source") else None),
                  qos=qos(m.qos if m.HasField("qos") else None), condition=m.condition,
                  ceiling=qos(m.ceiling if m.HasField("ceiling") else None), ceiling_reason=m.ceiling_reason)


def io_reports_pb(host_nqn: str, reports: Mapping[str, IoReport]) -> pb.ReportIORequest:
    return pb.ReportIORequest(host_nqn=host_nqn, volumes=[
        pb.VolumeIO(volume_id=vid, latency_us=r.latency_us, bytes_per_second=r.bps, ios_per_second=r.iops)
        for vid, r in sorted(reports.items())])


def io_reports(m: pb.ReportIORequest) -> dict[str, IoReport]:
    return {v.volume_id: IoReport(v.latency_us, v.bytes_per_second, v.ios_per_second) for v in m.volumes}


def _unix_ns(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def snapshot_pb(s: Snapshot) -> pb.Snapshot:
    return pb.Snapshot(id=s.id, name=s.name, source_volume_id=s.source_volume_id,
                       size_bytes=s.size_bytes, created_at_unix_ns=_unix_ns(s.created_at), ready=s.ready,
                       group_id=s.group_id)


def snapshot(m: pb.Snapshot) -> Snapshot:
    created = datetime.fromtimestamp(m.created_at_unix_ns / 1e9, UTC)
    return Snapshot(id=m.id, name=m.name, source_volume_id=m.source_volume_id,
                    size_bytes=m.size_bytes, created_at=created, ready=m.ready, group_id=m.group_id)


def group_snapshot_pb(g: GroupSnapshot) -> pb.GroupSnapshot:
    return pb.GroupSnapshot(id=g.id, name=g.name, snapshots=[snapshot_pb(s) for s in g.snapshots],
                            created_at_unix_ns=_unix_ns(g.created_at), ready=g.ready)


def group_snapshot(m: pb.GroupSnapshot) -> GroupSnapshot:
    return GroupSnapshot(id=m.id, name=m.name, snapshots=tuple(snapshot(s) for s in m.snapshots),
                         created_at=datetime.fromtimestamp(m.created_at_unix_ns / 1e9, UTC), ready=m.ready)


def capacity_pb(c: Capacity) -> pb.Capacity:
    return pb.Capacity(**c.__dict__)


def capacity(m: pb.Capacity) -> Capacity:
    return Capacity(total_bytes=m.total_bytes, used_bytes=m.used_bytes,
                    provisioned_bytes=m.provisioned_bytes, available_bytes=m.available_bytes,
                    data_percent=m.data_percent, metadata_percent=m.metadata_percent,
                    overcommit_ratio=m.overcommit_ratio, allocation_unit_bytes=m.allocation_unit_bytes)


def export_pb(x: Export) -> pb.Export:
    return pb.Export(volume_id=x.volume_id, subsystem_nqn=x.subsystem_nqn,
                     namespace_uuid=x.namespace_uuid, namespace_nguid=x.namespace_nguid,
                     serial=x.serial, portals=[portal_pb(p) for p in x.portals], hosts=sorted(x.hosts),
                     readonly_hosts=sorted(x.readonly_hosts))


def export(m: pb.Export) -> Export:
    return Export(volume_id=m.volume_id, subsystem_nqn=m.subsystem_nqn,
                  namespace_uuid=m.namespace_uuid, namespace_nguid=m.namespace_nguid,
                  serial=m.serial, portals=tuple(portal(p) for p in m.portals),
                  hosts=frozenset(m.hosts), readonly_hosts=frozenset(m.readonly_hosts))


def maybe_export_pb(x: Export | None) -> pb.MaybeExport:
    return pb.MaybeExport(export=export_pb(x)) if x else pb.MaybeExport()


def maybe_export(m: pb.MaybeExport) -> Export | None:
    return export(m.export) if m.HasField("export") else None


def health_pb(h: Health) -> pb.Health:
    return pb.Health(ready=h.ready, problems=list(h.problems))


def health(m: pb.Health) -> Health:
    return Health(ready=m.ready, problems=tuple(m.problems))


def info_pb(i: TargetInfo) -> pb.TargetInfo:
    return pb.TargetInfo(target_id=i.target_id, backend=i.backend, topology=dict(i.topology),
                         portals=[portal_pb(p) for p in i.portals], version=i.version)


def info(m: pb.TargetInfo) -> TargetInfo:
    return TargetInfo(target_id=m.target_id, backend=m.backend, topology=dict(m.topology),
                      portals=tuple(portal(p) for p in m.portals), version=m.version)
