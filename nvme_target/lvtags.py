"""Sluice's records in LV tags, so LVM alone can rebuild every volume and snapshot.

Tags use only [A-Za-z0-9._-]; free text (the CSI name, metadata) is hex-encoded:

    sluice.kind.volume | sluice.kind.snapshot
    sluice.name.<hex of the CSI name>
    sluice.meta.<hex of the metadata as JSON>          (volumes with metadata)
    sluice.src.snapshot.<id> | sluice.src.volume.<id>  (clones; a snapshot's origin volume)
    sluice.qos.<hex of the limits as JSON>             (volumes whose limits were set)
    sluice.incomplete                                  (a clone not yet grown to its size:
                                                        crash debris until the tag is dropped)
    sluice.grp.<group id>.<member count>               (snapshots taken in a group snapshot)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from nvme_target.lvm import LogicalVolume
from nvme_target.model import QoS, Snapshot, Source, Volume

KIND, NAME, META, SRC, QOS = "sluice.kind.", "sluice.name.", "sluice.meta.", "sluice.src.", "sluice.qos."
INCOMPLETE = "sluice.incomplete"
GRP = "sluice.grp."


def volume_tags(name: str, metadata: Mapping[str, str], source: Source | None) -> list[str]:
    tags = [KIND + "volume", NAME + name.encode().hex()]
    if metadata:
        tags.append(META + json.dumps(dict(metadata), sort_keys=True, separators=(",", ":")).encode().hex())
    if source is not None:
        tags.append(f"{SRC}{source.kind}.{source.id}")
    return tags


def snapshot_tags(name: str, source_volume_id: str) -> list[str]:
    return [KIND + "snapshot", NAME + name.encode().hex(), f"{SRC}volume.{source_volume_id}"]


def group_tag(group_id: str, size: int) -> str:
    return f"{GRP}{group_id}.{size}"


def group_of(lv: LogicalVolume) -> tuple[str, int] | None:
    """(group id, member count) of a snapshot taken in a group snapshot."""
    value = _value(lv, GRP)
    if not value:
        return None
    group_id, _, size = value.rpartition(".")
    return group_id, int(size)


def qos_tag(qos: QoS) -> str:
    return QOS + json.dumps(qos.as_params(), sort_keys=True, separators=(",", ":")).encode().hex()


def qos_tags(lv: LogicalVolume) -> list[str]:
    return [tag for tag in lv.tags if tag.startswith(QOS)]


def incomplete(lv: LogicalVolume | None) -> bool:
    return lv is not None and INCOMPLETE in lv.tags


def kind(lv: LogicalVolume | None) -> str | None:
    return _value(lv, KIND) if lv is not None else None


def to_volume(lv: LogicalVolume | None) -> Volume | None:
    if lv is None or kind(lv) != "volume" or incomplete(lv):
        return None
    meta_hex = _value(lv, META)
    metadata = json.loads(bytes.fromhex(meta_hex)) if meta_hex else {}
    qos_hex = _value(lv, QOS)
    qos = QoS.from_params(json.loads(bytes.fromhex(qos_hex))) if qos_hex is not None else None
    return Volume(id=lv.name, name=_name(lv), size_bytes=lv.size, metadata=metadata, source=_source(lv),
                  qos=qos)


def to_snapshot(lv: LogicalVolume | None) -> Snapshot | None:
    if lv is None or kind(lv) != "snapshot":
        return None
    source = _source(lv)
    group = group_of(lv)
    return Snapshot(id=lv.name, name=_name(lv), source_volume_id=source.id if source else "",
                    size_bytes=lv.size, created_at=lv.created_at, ready=True, group_id=group[0] if group else "")


def _value(lv: LogicalVolume, prefix: str) -> str | None:
    for tag in lv.tags:
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return None


def _name(lv: LogicalVolume) -> str:
    return bytes.fromhex(_value(lv, NAME) or "").decode("utf-8")


def _source(lv: LogicalVolume) -> Source | None:
    value = _value(lv, SRC)
    if not value:
        return None
    kind_, _, id_ = value.partition(".")
    return Source(kind=kind_, id=id_)  # type: ignore[arg-type]
