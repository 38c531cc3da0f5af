"""Read-only that holds against the pod, not only against polite writers.

- A read-only *mount* of a device node does not stop `open(O_RDWR)` on it: the kernel
  skips the mount's read-only check for device files. So a Block volume published
  read-only gets its own device-mapper linear device created `--readonly` (the kernel
  marks that disk read-only: every write to it fails with EPERM, O_DIRECT or not), and
  the pod gets a bind of *that* node. One layer per publish, named from the volume and
  the target path, so a retried or crashed publish/unpublish/unstage finds it again.
- For the *_READER_ONLY modes the namespace device itself is also set read-only
  (BLKROSET) before anything mounts it, so a `mount -o remount,rw` of the filesystem is
  refused by the kernel (the superblock cannot go read-write on a read-only disk) and
  no journal is ever replayed onto it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
from pathlib import Path

import structlog

from csi_driver import ids
from sluice_common import runner
from sluice_common.errors import NotFound

log = structlog.get_logger(__name__)
BLKROSET = 0x125D  # _IO(0x12, 93)
BLKROGET = 0x125E
PREFIX = "sluice-ro-"


def set_device_read_only(device: str) -> None:
    """Mark /dev/<device> read-only in the kernel (BLKROSET): writes fail with EPERM."""
    fd = os.open(f"/dev/{device}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, BLKROSET, struct.pack("i", 1))
    finally:
        os.close(fd)


def device_read_only(device: str) -> bool:
    fd = os.open(f"/dev/{device}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, BLKROGET, struct.pack("i", 0)))[0] == 1
    finally:
        os.close(fd)


def volume_tag(volume_id: str) -> str:
    try:
        return ids.split_volume(volume_id)[1]
    except NotFound:
        return hashlib.sha256(volume_id.encode()).hexdigest()[:32]


def layer_name(volume_id: str, target_path: str) -> str:
    """The dm name of a publish's read-only layer (deterministic: found again after a crash)."""
    digest = hashlib.sha256(os.path.realpath(target_path).encode()).hexdigest()[:16]
    return f"{PREFIX}{volume_tag(volume_id)}-{digest}"


def layer_device(name: str) -> str | None:
    """The dm-N device of a dm name, if it exists."""
    for dm in Path("/sys/block").glob("dm-*"):
        try:
            if (dm / "dm" / "name").read_text().strip() == name:
                return dm.name
        except OSError:
            continue
    return None


def make_layer(name: str, device: str) -> str:
    """A read-only linear dm device over all of /dev/<device>; returns its dm-N name."""
    existing = layer_device(name)
    if existing is not None:
        return existing
    sectors = int(Path(f"/sys/block/{device}/size").read_text())
    runner.run(["dmsetup", "create", name, "--readonly", "--table", f"0 {sectors} linear /dev/{device} 0"],
               timeout=120)
    created = layer_device(name)
    if created is None:
        raise FileNotFoundError(f"dm device {name} did not appear")
    log.info("read-only layer made", name=name, device=device, layer=created)
    return created


def remove_layer(name: str) -> None:
    if layer_device(name) is None:
        return
    runner.run(["dmsetup", "remove", "--retry", name], timeout=120)
    log.info("read-only layer removed", name=name)


def layers_of(volume_id: str) -> list[str]:
    """Every read-only layer of a volume on this node (for unstage after a lost record)."""
    prefix = f"{PREFIX}{volume_tag(volume_id)}-"
    names = []
    for dm in Path("/sys/block").glob("dm-*"):
        try:
            name = (dm / "dm" / "name").read_text().strip()
        except OSError:
            continue
        if name.startswith(prefix):
            names.append(name)
    return sorted(names)
