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


QOS_KEYS = {"qos.readIOPS": "read_iops", "qos.writeIOPS": "write_iops",
            "qos.readBPS": "read_bps", "qos.writeBPS": "write_bps"}
# Latency protection (nvme_target/protect.py): the volume's class and its objective or floor
POLICY_KEYS = {"qos.latencyTargetUs": "latency_target_us", "qos.minBPS": "min_bps", "qos.minIOPS": "min_iops"}
CLASS_KEY = "qos.class"


@dataclass(frozen=True)
class QoS:
    """A volume's I/O limits; None is unlimited. IOPS in operations, BPS in bytes per
    second. The node enforces all four with io.max; a backend that can also limit on the
    target (SPDK) maps them onto what it has."""

    read_iops: int | None = None
    write_iops: int | None = None
    read_bps: int | None = None
    write_bps: int | None = None
    # latency protection: "latency" (protected), "bulk" (yields) or None (neither)
    qos_class: str | None = None
    latency_target_us: int | None = None  # a latency volume's objective (None: its calm baseline)
    min_bps: int | None = None            # a bulk volume is never squeezed below these
    min_iops: int | None = None

    def as_params(self) -> dict[str, str]:
        """The StorageClass form: {"qos.readIOPS": "200", ...}, unset limits left out."""
        out = {key: str(getattr(self, attr)) for key, attr in (QOS_KEYS | POLICY_KEYS).items()
               if getattr(self, attr) is not None}
        return out | ({CLASS_KEY: self.qos_class} if self.qos_class else {})

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> QoS:
        """The inverse of as_params for already-validated values; other keys are ignored."""
        return cls(**{attr: int(params[key]) for key, attr in (QOS_KEYS | POLICY_KEYS).items() if params.get(key)},
                   qos_class=params.get(CLASS_KEY) or None)

    def merged(self, change: QoS) -> QoS:
        """These limits with every limit `change` sets replacing ours; a 0 (or a class "")
        in `change` removes that limit (a VolumeAttributesClass value "max")."""
        out: dict = {}
        for attr in (*QOS_KEYS.values(), *POLICY_KEYS.values(), "qos_class"):
            new = getattr(change, attr)
            out[attr] = getattr(self, attr) if new is None else (new or None)
        return QoS(**out)

    @property
    def caps(self) -> QoS:
        """The static caps alone (what io.max enforces), without the protection policy."""
        return QoS(**{attr: getattr(self, attr) for attr in QOS_KEYS.values()})

    @property
    def empty(self) -> bool:
        return self == QoS()

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, attr) is None for attr in QOS_KEYS.values())


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    size_bytes: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    source: Source | None = None
    qos: QoS | None = None  # None: never set (unlimited); set with Backend.set_qos
    condition: str = ""     # empty: healthy; otherwise why the volume is abnormal
    # latency protection (nvme_target/protect.py): the agent's dynamic ceiling, None: none
    ceiling: QoS | None = None
    ceiling_reason: str = ""  # why the ceiling last changed (or was released)

    @property
    def limits(self) -> QoS:
        return self.qos if self.qos is not None else QoS()


@dataclass(frozen=True)
class IoReport:
    """A node's measurement of one published volume over its last report window
    (the namespace device's stats): mean latency per I/O, bytes/s and I/O/s."""

    latency_us: float
    bps: float
    iops: float


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str
    source_volume_id: str
    size_bytes: int
    created_at: datetime
    ready: bool = True
    group_id: str = ""  # the group snapshot this one was taken in (nvme_target/groups.py), if any


@dataclass(frozen=True)
class GroupSnapshot:
    """Member snapshots of several volumes cut at one instant (crash-consistent as a set).
    `ready` is False only for a set a crash interrupted: a retried create finishes it."""

    id: str
    name: str
    snapshots: tuple[Snapshot, ...]  # ordered by source volume id
    created_at: datetime
    ready: bool = True

    @property
    def source_volume_ids(self) -> tuple[str, ...]:
        return tuple(s.source_volume_id for s in self.snapshots)


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
    readonly_hosts: frozenset[str] = frozenset()  # hosts it was published to read-only


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
