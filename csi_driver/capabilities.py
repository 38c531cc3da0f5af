"""Volume capabilities as plain values, and which ones Sluice serves.

Sluice serves Block and Mount (ext4, xfs) access with the single-node modes and
MULTI_NODE_READER_ONLY (many inference pods reading one model volume). A thin LV has no
cluster filesystem, so multi-node writers are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sluice_common.errors import InvalidArgument

FS_TYPES = ("ext4", "xfs")
DEFAULT_FS = "ext4"
SUPPORTED_MODES = frozenset({
    "SINGLE_NODE_WRITER", "SINGLE_NODE_SINGLE_WRITER", "SINGLE_NODE_MULTI_WRITER",
    "SINGLE_NODE_READER_ONLY", "MULTI_NODE_READER_ONLY",
})
SINGLE_NODE = frozenset(m for m in SUPPORTED_MODES if m.startswith("SINGLE_NODE"))
READ_ONLY = frozenset({"SINGLE_NODE_READER_ONLY", "MULTI_NODE_READER_ONLY"})


@dataclass(frozen=True)
class Capability:
    access_type: Literal["block", "mount"]
    mode: str
    fs_type: str = ""
    mount_flags: tuple[str, ...] = ()
    volume_mount_group: str = ""

    @property
    def fs(self) -> str:
        return self.fs_type or DEFAULT_FS

    @property
    def single_node(self) -> bool:
        return self.mode in SINGLE_NODE

    @property
    def read_only(self) -> bool:
        return self.mode in READ_ONLY


def unsupported(cap: Capability) -> str | None:
    """Why Sluice cannot serve `cap`, or None when it can."""
    if cap.mode not in SUPPORTED_MODES:
        return f"access mode {cap.mode} is not supported (a thin block volume has one writer node)"
    if cap.access_type == "mount" and cap.fs_type not in ("", *FS_TYPES):
        return f"fs_type {cap.fs_type!r} is not supported (ext4, xfs)"
    return None


def require_supported(caps: list[Capability], field: str) -> None:
    if not caps:
        raise InvalidArgument(f"{field} is required")
    for cap in caps:
        reason = unsupported(cap)
        if reason:
            raise InvalidArgument(f"{field}: {reason}")
