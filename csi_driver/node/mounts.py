"""Mounts, read from /proc/self/mountinfo and made with mount(2) (or mount(8) for options
only it knows) — never lazily undone."""

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


# mount(8)'s words for the VFS flags of mount(2): word -> (flag, set it or clear it)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS = 1, 2, 4, 8, 16
MS_MANDLOCK, MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME, MS_SILENT = 64, 128, 1024, 2048, 32768
MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME = 1 << 21, 1 << 24, 1 << 25
VFS_FLAGS: dict[str, tuple[int, bool]] = {
    "ro": (MS_RDONLY, True), "rw": (MS_RDONLY, False),
    "nosuid": (MS_NOSUID, True), "suid": (MS_NOSUID, False),
    "nodev": (MS_NODEV, True), "dev": (MS_NODEV, False),
    "noexec": (MS_NOEXEC, True), "exec": (MS_NOEXEC, False),
    "sync": (MS_SYNCHRONOUS, True), "async": (MS_SYNCHRONOUS, False),
    "mand": (MS_MANDLOCK, True), "nomand": (MS_MANDLOCK, False),
    "dirsync": (MS_DIRSYNC, True),
    "noatime": (MS_NOATIME, True), "atime": (MS_NOATIME, False),
    "nodiratime": (MS_NODIRATIME, True), "diratime": (MS_NODIRATIME, False),
    "relatime": (MS_RELATIME, True), "norelatime": (MS_RELATIME, False),
    "strictatime": (MS_STRICTATIME, True), "nostrictatime": (MS_STRICTATIME, False),
    "lazytime": (MS_LAZYTIME, True), "nolazytime": (MS_LAZYTIME, False),
    "silent": (MS_SILENT, True), "loud": (MS_SILENT, False),
    "defaults": (0, True),
}
# filesystem options (mount(2)'s data string) the kernel takes as written, with no
# userspace meaning; any other option sends the mount through mount(8)
FS_DATA = frozenset({"noload", "norecovery", "nouuid", "discard", "nodiscard"})


def syscall_options(flags: tuple[str, ...]) -> tuple[int, str] | None:
    """(mount(2) flags, data string) for `flags`, later words winning as in mount(8);
    None when one is neither a VFS flag nor in FS_DATA."""
    mountflags, data = 0, []
    for word in flags:
        if word in VFS_FLAGS:
            bit, on = VFS_FLAGS[word]
            mountflags = mountflags | bit if on else mountflags & ~bit
        elif word in FS_DATA:
            data.append(word)
        else:
            return None
    return mountflags, ",".join(data)


def mount(source: str, target: str, fs_type: str, flags: tuple[str, ...] = ()) -> None:
    """Mount `source` at `target` with its final flags in one step. mount(2) directly when
    every option is a VFS flag or in FS_DATA (no fork and exec of mount(8): 88 ms of a
    ~660 ms NodeStageVolume in a profiled lab run); mount(8) for anything else, which
    knows what each of its options means."""
    options = syscall_options(flags)
    if options is None:
        opts = ["-o", ",".join(flags)] if flags else []
        runner.run(["mount", "-t", fs_type, *opts, source, target], timeout=300)
        return
    mountflags, data = options
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    if libc.mount(source.encode(), target.encode(), fs_type.encode(), mountflags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise BackendFailure(f"mount of {source} at {target} ({fs_type}, {','.join(flags) or 'defaults'}) "
                             f"failed: {os.strerror(err)}", errno=err)


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
