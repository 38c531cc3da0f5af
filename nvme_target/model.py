"""Plain, frozen values that every backend speaks: no gRPC, no LVM, no SPDK types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from collections.abc import Mapping

SourceKind = Literal["snapshot", "volume"]


@dataclass(frozen=True)
class Source:
    """Where a volume's initial content came from."""

    kind: SourceKind
    id: str


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    size_bytes: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    source_volume_id: str
    size_bytes: int
    created_at: datetime
    ready: bool = True


@dataclass(frozen=True)
class Capacity:
    """Thin pool capacity. `provisioned` is the sum of volume sizes (virtual);
    `available` is what a new volume may still take under the overcommit ratio."""

    total_bytes: int
    used_bytes: int
    provisioned_bytes: int
    available_bytes: int
    data_percent: float
    metadata_percent: float
    overcommit_ratio: float
    allocation_unit_bytes: int  # sizes are rounded up to a multiple of this


@dataclass(frozen=True)
class Portal:
    """An NVMe/TCP listen address of the target."""

    traddr: str
    trsvcid: str = "4420"
    adrfam: Literal["ipv4", "ipv6"] = "ipv4"


@dataclass(frozen=True)
class Export:
    volume_id: str
    subsystem_nqn: str
    namespace_uuid: str
    namespace_nguid: str
    serial: str
    portals: tuple[Portal, ...]
    hosts: frozenset[str]


@dataclass(frozen=True)
class Health:
    ready: bool
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class TargetInfo:
    """Who a storage node is: its id, backend kind, topology segment and portals."""

    target_id: str
    backend: str
    topology: Mapping[str, str]
    portals: tuple[Portal, ...]
    version: str
