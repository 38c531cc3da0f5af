"""Mounts, read from /proc/self/mountinfo and made with mount(8) — never lazily undone."""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from sluice_common import runner
from sluice_common.errors import BackendFailure


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    majmin: str
    fs_type: str
    source: str
    options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def entries() -> list[MountEntry]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        out.append(MountEntry(mountpoint=_unescape(fields[4]), majmin=fields[2], fs_type=tail[0],
                              source=_unescape(tail[1]), options=tuple(fields[5].split(","))))
    return out


def at(path: str) -> MountEntry | None:
    """The topmost mount at `path`, if any."""
    real = os.path.realpath(path)
    found = [e for e in entries() if e.mountpoint == real]
    return found[-1] if found else None


def mount(source: str, target: str, fs_type: str, flags: tuple[str, ...] = ()) -> None:
    opts = ["-o", ",".join(flags)] if flags else []
    runner.run(["mount", "-t", fs_type, *opts, source, target], timeout=300)


def bind(source: str, target: str, read_only: bool = False) -> None:
    """Bind `source` onto `target` in one atomic step: the new mount is made detached
    (open_tree), given its final flags there (mount_setattr), then attached (move_mount).
    A crash at any point leaves either nothing at `target` or the final mount; never a
    writable bind waiting for its `remount,ro` (what `mount --bind -o ro` does)."""
    tree = _syscall(_OPEN_TREE, _AT_FDCWD, source.encode(), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    try:
        if read_only:
            attr = struct.pack("QQQQ", _MOUNT_ATTR_RDONLY, 0, 0, 0)
            _syscall(_MOUNT_SETATTR, tree, b"", _AT_EMPTY_PATH, attr, len(attr))
        _syscall(_MOVE_MOUNT, tree, b"", _AT_FDCWD, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH)
    finally:
        os.close(tree)


# x86_64/arm64 share these numbers (the new mount API syscalls are numbered alike everywhere)
_OPEN_TREE, _MOVE_MOUNT, _MOUNT_SETATTR = 428, 429, 442
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_OPEN_TREE_CLONE = 1
_MOUNT_ATTR_RDONLY = 0x1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4


def _syscall(number: int, *args) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    conv = [ctypes.c_long(a) if isinstance(a, int) else ctypes.c_char_p(a) for a in args]
    result = libc.syscall(ctypes.c_long(number), *conv)
    if result < 0:
        err = ctypes.get_errno()
        raise BackendFailure(f"mount syscall {number} failed: {os.strerror(err)}", errno=err)
    return result


def umount(target: str) -> None:
    runner.run(["umount", target], timeout=300)
