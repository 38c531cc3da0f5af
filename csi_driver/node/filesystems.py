"""Filesystems on a device: probe, make (only on a blank device), grow online."""

from __future__ import annotations

from csi_driver.node import blkid
from sluice_common import runner
from sluice_common.errors import FailedPrecondition, InvalidArgument

MKFS = {
    # no discard: a fresh thin volume reads zeros already, and discarding it over
    # NVMe/TCP only costs time
    "ext4": ["mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=1,lazy_journal_init=1"],
    "xfs": ["mkfs.xfs", "-q", "-K"],
}


def probe(device: str) -> dict[str, str]:
    """libblkid's low-level probe of a device: {} when it holds no signature at all."""
    return blkid.probe(device)


def ensure(device: str, fs: str) -> bool:
    """Make `fs` on a blank device; accept one that already holds `fs`; refuse anything
    else (a device holding other data is never reformatted). True when it made one."""
    if fs not in MKFS:
        raise InvalidArgument(f"fs_type {fs!r} is not supported (ext4, xfs)")
    found = probe(device)
    if not found:
        runner.run([*MKFS[fs], device], timeout=600)
        return True
    if found.get("TYPE") == fs:
        return False
    what = found.get("TYPE") or (f"a {found['PTTYPE']} partition table" if "PTTYPE" in found else "data")
    raise FailedPrecondition(f"{device} holds {what}, not {fs}: refusing to format it")


def grow(device: str, fs: str, mountpoint: str) -> None:
    if fs == "xfs":
        runner.run(["xfs_growfs", mountpoint], timeout=600)
    else:
        runner.run(["resize2fs", device], timeout=600)


# a read-only mount must not write the device: no journal replay (a dirty journal stays
# as it is; the data read is what was last checkpointed)
NO_REPLAY = {"ext4": "noload", "xfs": "norecovery"}


def mount_options(fs: str, flags: tuple[str, ...], read_only: bool) -> tuple[str, ...]:
    """The -o options for a staging mount, final in one mount(2): the driver's go last."""
    return (*flags, "ro", NO_REPLAY[fs]) if read_only else tuple(flags)
