"""Deterministic identities: everything a retry must find again derives from the name.

A volume's id (its LV or lvol name), its subsystem NQN, namespace UUID, NGUID and
serial are pure functions of the CSI name, so a retried create finds what the first
attempt made and a node can find the device by UUID.
"""

from __future__ import annotations

import hashlib
import uuid

from nvme_target.model import Export

NQN_PREFIX = "nqn.2026-11.dev.sluice"
_UUID_NAMESPACE = uuid.UUID("6c5c1f0e-7d1b-4c8e-9a52-51c3e0b6d0a1")  # Sluice's own, fixed forever
VOLUME_PREFIX = "v-"
SNAPSHOT_PREFIX = "s-"
GROUP_PREFIX = "g-"


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


def volume_id(name: str) -> str:
    return VOLUME_PREFIX + _digest(name)


def snapshot_id(name: str) -> str:
    return SNAPSHOT_PREFIX + _digest(name)


def group_snapshot_id(name: str) -> str:
    return GROUP_PREFIX + _digest(name)


def member_snapshot_name(group_name: str, vol_id: str) -> str:
    """The name a group's member snapshot is recorded under: its id derives from it, so a
    retried group create finds the members the first try made."""
    return f"{group_name}@{vol_id}"


def subsystem_nqn(vol_id: str) -> str:
    return f"{NQN_PREFIX}:vol:{vol_id}"


def namespace_uuid(vol_id: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, f"ns-uuid:{vol_id}"))


def namespace_nguid(vol_id: str) -> str:
    return str(uuid.uuid5(_UUID_NAMESPACE, f"ns-nguid:{vol_id}"))


def serial(vol_id: str) -> str:
    """NVMe serial numbers are at most 20 ASCII characters."""
    return vol_id.replace("-", "")[:20]


def is_volume_id(value: str) -> bool:
    return _is_id(value, VOLUME_PREFIX)


def is_snapshot_id(value: str) -> bool:
    return _is_id(value, SNAPSHOT_PREFIX)


def is_group_snapshot_id(value: str) -> bool:
    return _is_id(value, GROUP_PREFIX)


def _is_id(value: str, prefix: str) -> bool:
    rest = value[len(prefix):]
    return value.startswith(prefix) and len(rest) == 32 and all(c in "0123456789abcdef" for c in rest)


def export(vol_id: str, portals: tuple, hosts, readonly_hosts=()) -> Export:
    """What a volume's export looks like to a host: everything derives from the id."""
    hosts = frozenset(hosts)
    return Export(volume_id=vol_id, subsystem_nqn=subsystem_nqn(vol_id), namespace_uuid=namespace_uuid(vol_id),
                  namespace_nguid=namespace_nguid(vol_id), serial=serial(vol_id), portals=tuple(portals),
                  hosts=hosts, readonly_hosts=frozenset(readonly_hosts) & hosts)
