"""Input checks every backend applies before touching anything."""

from __future__ import annotations

import json
from collections.abc import Mapping

from nvme_target import naming
from sluice_common.errors import InvalidArgument, NotFound

MAX_NAME_BYTES = 128
MAX_METADATA_BYTES = 480          # JSON-encoded; fits one LVM tag (1024 chars) as hex
MAX_VOLUME_BYTES = 1 << 50        # 1 PiB: far past any thin pool Sluice manages
_BANNED = {*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)}
NQN_MAX = 223


def name(value: str, field: str = "name") -> str:
    """A CSI name: 1..128 bytes of UTF-8 without the control characters the spec bans."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{field} is required")
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidArgument(f"{field} is longer than {MAX_NAME_BYTES} bytes")
    bad = [c for c in value if ord(c) in _BANNED]
    if bad:
        raise InvalidArgument(f"{field} contains a control character (U+{ord(bad[0]):04X})")
    return value


def size(value: int, field: str = "size_bytes") -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{field} must be an integer")
    if value <= 0:
        raise InvalidArgument(f"{field} must be positive, got {value}")
    if value > MAX_VOLUME_BYTES:
        raise InvalidArgument(f"{field} {value} exceeds the maximum volume size {MAX_VOLUME_BYTES}")
    return value


def metadata(value: Mapping[str, str] | None) -> dict[str, str]:
    meta = dict(value or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str) or not k:
            raise InvalidArgument("metadata keys and values must be non-empty strings")
    if len(json.dumps(meta, sort_keys=True).encode()) > MAX_METADATA_BYTES:
        raise InvalidArgument(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    return meta


def volume_id(value: str) -> str:
    """An id that cannot be one of ours does not exist."""
    if not isinstance(value, str) or not naming.is_volume_id(value):
        raise NotFound(f"volume {value!r} not found")
    return value


def snapshot_id(value: str) -> str:
    if not isinstance(value, str) or not naming.is_snapshot_id(value):
        raise NotFound(f"snapshot {value!r} not found")
    return value


def group_snapshot_id(value: str) -> str:
    if not isinstance(value, str) or not naming.is_group_snapshot_id(value):
        raise NotFound(f"group snapshot {value!r} not found")
    return value


def host_nqn(value: str) -> str:
    if not isinstance(value, str) or not value.startswith("nqn.") or len(value) > NQN_MAX:
        raise InvalidArgument(f"host NQN {value!r} is not an NQN (nqn.…, at most {NQN_MAX} bytes)")
    if any(c.isspace() or c == "/" for c in value):
        raise InvalidArgument(f"host NQN {value!r} contains whitespace or '/'")
    return value
