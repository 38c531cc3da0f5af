"""Which publications a volume may have at once, and what it was created for.

A volume records the capabilities it was created with in its metadata under
CAPABILITIES_KEY (the `csi.sluice.dev/` prefix cannot come from a StorageClass, whose
unknown keys are refused), so a same-name CreateVolume asking for more is
ALREADY_EXISTS. The target remembers which hosts a volume is published to, and which
of them read-only (Export.readonly_hosts), which is enough to judge a new publication:
- the same node again with the same read-only flag is the same publication (OK);
  with another flag it is ALREADY_EXISTS;
- a second node is FAILED_PRECONDITION unless every publication, old and new, is
  read-only under a multi-node mode (MULTI_NODE_READER_ONLY).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from csi_driver.capabilities import Capability
from nvme_target.model import Export
from sluice_common.errors import AlreadyExists, FailedPrecondition

RESERVED_PREFIX = "csi.sluice.dev/"
CAPABILITIES_KEY = RESERVED_PREFIX + "capabilities"


def encode(caps: Sequence[Capability]) -> str:
    """Compact (volume metadata is small): "block/snw,mount/mnro" for Block
    SINGLE_NODE_WRITER and Mount MULTI_NODE_READER_ONLY (sorted, deduplicated)."""
    return ",".join(sorted({f"{c.access_type}/{_initials(c.mode)}" for c in caps}))


def _initials(mode: str) -> str:
    return "".join(word[0] for word in mode.split("_")).lower()


def covers(metadata: Mapping[str, str], caps: Sequence[Capability]) -> bool:
    """Whether a volume created with `metadata` serves `caps`. A volume made before
    capabilities were recorded serves anything Sluice supports."""
    stored = metadata.get(CAPABILITIES_KEY)
    return stored is None or set(encode(caps).split(",")) <= set(stored.split(","))


def user_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The StorageClass part of a volume's metadata (what its context shows)."""
    return {k: v for k, v in metadata.items() if not k.startswith(RESERVED_PREFIX)}


def check_publish(volume_id: str, export: Export | None, node_id: str, cap: Capability, readonly: bool) -> bool:
    """Whether `node_id` already has this publication (True), may get it (False), or
    raise: ALREADY_EXISTS for the same node with another read-only flag,
    FAILED_PRECONDITION for a node the volume's other publications exclude."""
    hosts = export.hosts if export else frozenset()
    readers = export.readonly_hosts if export else frozenset()
    if node_id in hosts:
        if (node_id in readers) != readonly:
            was = "read-only" if node_id in readers else "read-write"
            raise AlreadyExists(f"volume {volume_id} is already published to {node_id} {was}; "
                                f"readonly={str(readonly).lower()} is another publication")
        return True
    others = sorted(hosts - {node_id})
    if not others:
        return False
    if cap.single_node:
        raise FailedPrecondition(f"volume {volume_id} is published to {others[0]}; {cap.mode} allows one node")
    writers = [h for h in others if h not in readers]
    if not readonly or writers:
        holder = writers[0] if writers else others[0]
        raise FailedPrecondition(f"volume {volume_id} is published to {holder}; only read-only publications "
                                 f"may share a volume across nodes")
    return False
