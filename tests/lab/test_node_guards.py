"""Read-only that holds, and input that cannot reach the kernel, on the real kernel:

- a Block volume published read-only: `dd oflag=direct` and os.open(O_RDWR)+write fail,
  the device's bytes are unchanged;
- a ReadOnlyMany ext4 volume with a dirty journal: staged and published twice without
  replaying it (the device's bytes are unchanged); writes, `mount -o remount,rw` of the
  pod's mount and of the staging mount all fail;
- a Mount volume published `readonly`: the pod's mount is read-only, writes fail;
- a blank ReadOnlyMany volume is refused (FAILED_PRECONDITION naming it), nothing left;
- publish contexts and tunables with `,` `=` or a newline are refused (INVALID_ARGUMENT
  naming the field) and nothing reaches /dev/nvme-fabrics (no controller, no kernel log).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
from pathlib import Path

import grpc
import pytest

from csi_driver.node import fabrics, mounts
from sluice_proto import csi_pb2 as pb
from tests.conformance.client import MiB, Csi, block_cap, error_of, mount_cap
from tests.lab.attach import paths
from tests.lab.cluster import running
from tests.lab.kernel import read_block, sh

pytestmark = pytest.mark.lab
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
LOGFLUSH = 1
SIZE = 64 * MiB


@pytest.fixture(scope="module")
def cluster(thin_pool, tmp_path_factory):
    with running(thin_pool, tmp_path_factory.mktemp("guards")) as c:
        yield thin_pool[0], c.ctl, c.node_csi, c.node


class Use:
    """One volume on the node: stage once, publish at any number of target paths."""

    def __init__(self, ctl: Csi, node: Csi, vol: pb.Volume, cap: pb.VolumeCapability, readonly=False) -> None:
        self.ctl, self.node, self.vol, self.cap = ctl, node, vol, cap
        self.node_id = node.node.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
        self.staging, _ = paths(vol.volume_id)
        self.ctx = dict(ctl.publish(vol.volume_id, self.node_id, cap, readonly=readonly))
        self.targets: list[str] = []

    def stage(self) -> None:
        self.node.node.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=self.vol.volume_id, publish_context=self.ctx, staging_target_path=self.staging,
            volume_capability=self.cap, volume_context=self.vol.volume_context), timeout=300)

    def publish(self, readonly: bool = False) -> str:
        target = paths(self.vol.volume_id)[1]
        self.node.node.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=self.vol.volume_id, publish_context=self.ctx, staging_target_path=self.staging,
            target_path=target, volume_capability=self.cap, readonly=readonly,
            volume_context=self.vol.volume_context), timeout=120)
        self.targets.append(target)
        return target

    def finish(self, delete: bool = True) -> None:
        vid = self.vol.volume_id
        for target in self.targets:
            self.node.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target))
        self.node.node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=vid,
                                                                     staging_target_path=self.staging))
        self.ctl.unpublish(vid, self.node_id)
        assert fabrics.controllers(self.ctx["nvme.subnqn"]) == []
        assert not list(Path("/sys/block").glob("dm-*/dm/name")) or not any(
            p.read_text().startswith("sluice-ro-") for p in Path("/sys/block").glob("dm-*/dm/name"))
        if delete:
            self.ctl.delete(vid)


def lv_path(vg: str, volume_id: str) -> str:
    return f"/dev/{vg}/{volume_id.split('/', 1)[1]}"


def device_digest(path: str) -> str:
    return hashlib.sha256(read_block(path, SIZE)).hexdigest()


def refuses_writes(path: str) -> None:
    """O_RDWR + write, buffered and O_DIRECT, all fail on a read-only block device."""
    for flags in (os.O_RDWR, os.O_RDWR | os.O_DIRECT, os.O_WRONLY):
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            assert exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM), exc
            continue
        try:
            import mmap
            buf = mmap.mmap(-1, 4096)
            buf.write(b"x" * 4096)
            with pytest.raises(OSError) as caught:
                os.pwritev(fd, [buf], 0)
                os.fsync(fd)
            assert caught.value.errno in (errno.EPERM, errno.EROFS, errno.EACCES, errno.EIO), caught.value
        finally:
            os.close(fd)
    dd = sh("dd", "if=/dev/zero", f"of={path}", "bs=4096", "count=1", "oflag=direct", "conv=notrunc",
            check=False)
    assert dd.returncode != 0, dd


def dirty_ext4(device: str, mnt: Path) -> bytes:
    """An ext4 with a checkpointed file `base` and a journal that still needs recovery."""
    base = os.urandom(4 * MiB)
    sh("mkfs.ext4", "-q", "-F", device)
    mnt.mkdir(parents=True, exist_ok=True)
    sh("mount", device, str(mnt))
    (mnt / "base").write_bytes(base)
    sh("umount", str(mnt))                       # clean: `base` is checkpointed
    sh("mount", device, str(mnt))
    with open(mnt / "late", "wb") as fh:         # only in the journal
        fh.write(os.urandom(MiB))
        fh.flush()
        os.fsync(fh.fileno())
    fd = os.open(mnt, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", LOGFLUSH))
    finally:
        os.close(fd)
    sh("umount", str(mnt))
    assert "needs_recovery" in sh("dumpe2fs", "-h", device).stdout
    return base


def test_read_only_holds_for_block_and_mount(cluster, tmp_path):
    vg, ctl, node, _ = cluster

    # Block, RWO volume, published readonly next to a read-write publish
    vol = ctl.create("pvc-ro-block", size=SIZE, caps=[block_cap()])
    use = Use(ctl, node, vol, block_cap())
    use.stage()
    writer = use.publish()
    with open(writer, "r+b", buffering=0) as fh:
        fh.write(os.urandom(MiB))
        os.fsync(fh.fileno())
    reader = use.publish(readonly=True)
    before = device_digest(reader)
    refuses_writes(reader)
    assert device_digest(reader) == before == device_digest(lv_path(vg, vol.volume_id))
    use.finish()

    # ReadOnlyMany ext4 with a dirty journal: two publishes, no replay, no way to write
    rox = mount_cap(mode="MULTI_NODE_READER_ONLY")
    vol = ctl.create("pvc-rox-dirty", size=SIZE, caps=[rox])
    base = dirty_ext4(lv_path(vg, vol.volume_id), tmp_path / "prep")
    before = device_digest(lv_path(vg, vol.volume_id))
    use = Use(ctl, node, vol, rox)
    use.stage()
    targets = [use.publish(), use.publish()]
    for target in targets:
        assert (Path(target) / "base").read_bytes() == base
        assert mounts.at(target).read_only
        with pytest.raises(OSError) as caught:
            (Path(target) / "new").write_bytes(b"x")
        assert caught.value.errno == errno.EROFS
        assert sh("mount", "-o", "remount,rw", target, check=False).returncode != 0
        assert mounts.at(target).read_only
    assert sh("mount", "-o", "remount,rw", use.staging, check=False).returncode != 0
    refuses_writes(f"/dev/{mounts.at(use.staging).source.rsplit('/', 1)[-1]}")
    use.finish(delete=False)
    assert device_digest(lv_path(vg, vol.volume_id)) == before
    assert "needs_recovery" in sh("dumpe2fs", "-h", lv_path(vg, vol.volume_id)).stdout
    ctl.delete(vol.volume_id)

    # Mount, RWO volume, published readonly: the pod's mount is read-only
    vol = ctl.create("pvc-ro-mount", size=SIZE, caps=[mount_cap()])
    use = Use(ctl, node, vol, mount_cap())
    use.stage()
    (Path(use.publish()) / "data").write_bytes(b"written")
    target = use.publish(readonly=True)
    assert mounts.at(target).read_only and (Path(target) / "data").read_bytes() == b"written"
    with pytest.raises(OSError) as caught:
        (Path(target) / "data").write_bytes(b"changed")
    assert caught.value.errno == errno.EROFS
    use.finish()


def test_a_blank_volume_is_never_formatted_for_a_read_only_use(cluster):
    vg, ctl, node, _ = cluster
    rox = mount_cap(mode="MULTI_NODE_READER_ONLY", fs="xfs")
    vol = ctl.create("pvc-rox-blank", size=SIZE, caps=[rox])
    use = Use(ctl, node, vol, rox)
    err = error_of(use.stage)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and vol.volume_id in err.details(), err
    assert fabrics.controllers(use.ctx["nvme.subnqn"]) == []
    assert sh("blkid", "-p", lv_path(vg, vol.volume_id), check=False).returncode == 2  # still blank
    use.finish()


@pytest.mark.parametrize("bad", [
    {"nvme.subnqn": ",hostnqn=nqn.2014-08.org.evil:x"},
    {"nvme.subnqn": "\nctrl_loss_tmo=1"},
    {"nvme.portals": ",trsvcid=4421"},
    {"nvme.portals": "=1"},
    {"volume_context": {"nvme.ctrlLossTmo": "5,keep_alive_tmo=1"}},
    {"volume_context": {"nvme.keepAliveTmo": "5\nnr_io_queues=64"}},
], ids=["subnqn-comma", "subnqn-newline", "portal-comma", "portal-equals", "tunable-comma", "tunable-newline"])
def test_injection_never_reaches_the_fabrics_device(cluster, bad):
    _, ctl, node, _ = cluster
    vol = ctl.create("pvc-inject", size=SIZE, caps=[mount_cap()])
    use = Use(ctl, node, vol, mount_cap())
    field, value = next(iter(bad.items()))
    if field == "volume_context":
        use.vol = pb.Volume(volume_id=vol.volume_id, volume_context={**vol.volume_context, **value})
        field = next(iter(value))
    else:
        use.ctx[field] += value
    kernel_log = fabrics_log()
    err = error_of(use.stage)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.details(), err
    assert list(Path("/sys/class/nvme").iterdir()) == []
    assert fabrics_log() == kernel_log
    use.vol = vol
    use.finish()


def fabrics_log() -> int:
    """Kernel log lines a write to /dev/nvme-fabrics leaves (refused options or a new controller)."""
    return sum(1 for line in sh("dmesg").stdout.splitlines() if "nvme_fabrics" in line or "new ctrl" in line)
