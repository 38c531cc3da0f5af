"""What the controller and node services return: plain frozen values, no protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from collections.abc import Mapping


@dataclass(frozen=True)
class ContentSource:
    kind: Literal["snapshot", "volume"]
    id: str  # the CSI id of the snapshot or volume


@dataclass(frozen=True)
class VolumeInfo:
    volume_id: str
    capacity_bytes: int
    context: Mapping[str, str] = field(default_factory=dict)
    source: ContentSource | None = None
    topology: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True)
class VolumeStatus:
    published_node_ids: tuple[str, ...]
    abnormal: bool = False
    message: str = ""


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: str
    source_volume_id: str
    size_bytes: int
    created_at: datetime
    ready: bool
    group_snapshot_id: str = ""  # the CSI id of the group snapshot it was taken in, if any


@dataclass(frozen=True)
class GroupSnapshotInfo:
    group_snapshot_id: str
    snapshots: tuple[SnapshotInfo, ...]
    created_at: datetime
    ready: bool


@dataclass(frozen=True)
class CapacityInfo:
    available_bytes: int
    maximum_volume_size: int
