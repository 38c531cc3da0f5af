"""Lab smoke tests: prove the lab is a real kernel with everything Sluice needs.

A thin LV on a real LVM thin pool, exported by kernel nvmet through configfs on
127.0.0.1:4420 to one allowed host NQN, attached through /dev/nvme-fabrics by the
kernel NVMe/TCP initiator, found by its namespace UUID, and throttled by cgroup v2 io.max.
"""

from __future__ import annotations

import errno
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.kernel import (
    NVMET, block_device_with_uuid, controllers_for, delete_controller, fabrics_connect,
    fio_json, lvm, lvs_json, new_host_nqn, sh, wait_for,
)

pytestmark = [pytest.mark.lab, pytest.mark.timing]

PORT_ID = "1"
TRADDR, TRSVCID = "127.0.0.1", "4420"


@dataclass(frozen=True)
class Export:
    subnqn: str
    host_nqn: str
    ns_uuid: str
    device_path: str

    def connect_options(self, host_nqn: str | None = None) -> str:
        return (f"transport=tcp,traddr={TRADDR},trsvcid={TRSVCID},"
                f"nqn={self.subnqn},hostnqn={host_nqn or self.host_nqn}")


def test_kernel_modules_load(kernel_modules):
    for module in ("nvmet", "nvmet_tcp", "nvme_tcp", "nvme_fabrics", "dm_thin_pool"):
        assert Path("/sys/module", module).is_dir(), module
    assert Path("/dev/nvme-fabrics").exists()
    assert NVMET.is_dir(), "configfs with nvmet mounted at /sys/kernel/config"


def test_thin_pool_and_thin_lv(thin_pool):
    vg, pool = thin_pool
    lvm("lvcreate", "-q", "-V", "1G", "-T", f"{vg}/{pool}", "-n", "smoke-lv")
    try:
        lvs = {lv["lv_name"]: lv for lv in lvs_json(vg)}
        assert lvs[pool]["segtype"] == "thin-pool"
        assert lvs["smoke-lv"]["segtype"] == "thin"
        assert lvs["smoke-lv"]["pool_lv"] == pool
        assert lvs["smoke-lv"]["lv_size"] == f"{1 << 30}B"
        assert "thin-pool" in sh("dmsetup", "table").stdout
    finally:
        lvm("lvremove", "-q", "-y", f"{vg}/smoke-lv")


@pytest.fixture(scope="module")
def export(thin_pool):
    """A 2 GiB thin LV exported over NVMe/TCP to exactly one host NQN."""
    vg, pool = thin_pool
    lvm("lvcreate", "-q", "-V", "2G", "-T", f"{vg}/{pool}", "-n", "smoke-export")
    ex = Export(subnqn="nqn.2026-11.dev.sluice:lab-smoke", host_nqn=new_host_nqn(),
                ns_uuid=str(uuid.uuid4()), device_path=f"/dev/{vg}/smoke-export")
    sub, host, port = NVMET / "subsystems" / ex.subnqn, NVMET / "hosts" / ex.host_nqn, NVMET / "ports" / PORT_ID
    sub.mkdir()
    (sub / "attr_allow_any_host").write_text("0")
    host.mkdir()
    (sub / "allowed_hosts" / ex.host_nqn).symlink_to(host)
    ns = sub / "namespaces" / "1"
    ns.mkdir()
    (ns / "device_path").write_text(ex.device_path)
    (ns / "device_uuid").write_text(ex.ns_uuid)
    (ns / "enable").write_text("1")
    port.mkdir()
    for attr, value in (("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"),
                        ("addr_traddr", TRADDR), ("addr_trsvcid", TRSVCID)):
        (port / attr).write_text(value)
    (port / "subsystems" / ex.subnqn).symlink_to(sub)
    yield ex
    for ctrl in controllers_for(ex.subnqn):
        delete_controller(ctrl)
    (port / "subsystems" / ex.subnqn).unlink()
    port.rmdir()
    (ns / "enable").write_text("0")
    ns.rmdir()
    (sub / "allowed_hosts" / ex.host_nqn).unlink()
    sub.rmdir()
    host.rmdir()
    lvm("lvremove", "-q", "-y", f"{vg}/smoke-export")


@pytest.fixture
def attached(export):
    """Connect as the allowed host; yield (controller, namespace block device)."""
    ctrl = fabrics_connect(export.connect_options())
    disk = wait_for(lambda: block_device_with_uuid(export.ns_uuid), 30, f"namespace {export.ns_uuid}")
    yield ctrl, disk
    sh("udevadm", "settle")  # let udev's partition scan finish before the device goes
    delete_controller(ctrl)
    wait_for(lambda: not controllers_for(export.subnqn), 30, "controller removal")


def test_export_is_configured(export):
    sub = NVMET / "subsystems" / export.subnqn
    assert (sub / "attr_allow_any_host").read_text().strip() == "0"
    assert [p.name for p in (sub / "allowed_hosts").iterdir()] == [export.host_nqn]
    assert (NVMET / "ports" / PORT_ID / "addr_traddr").read_text().strip() == TRADDR
    assert (sub / "namespaces/1/enable").read_text().strip() == "1"


def test_allowed_host_connects_and_namespace_has_target_uuid(export, attached):
    ctrl, disk = attached
    assert (Path("/sys/class/nvme") / ctrl / "state").read_text().strip() == "live"
    assert (Path("/sys/class/nvme") / ctrl / "subsysnqn").read_text().strip() == export.subnqn
    assert (Path("/sys/block") / disk / "uuid").read_text().strip() == export.ns_uuid
    size = int((Path("/sys/block") / disk / "size").read_text()) * 512
    assert size == 2 << 30
    # the data path works: write a pattern through NVMe/TCP, read it back from the LV
    pattern = os.urandom(1 << 20)
    with open(f"/dev/{disk}", "r+b", buffering=0) as dev:
        dev.write(pattern)
        os.fsync(dev.fileno())
    with open(export.device_path, "rb", buffering=0) as lv:
        assert lv.read(len(pattern)) == pattern


def test_unlisted_host_is_refused(export):
    stranger = new_host_nqn()
    with pytest.raises(OSError) as refused:
        fabrics_connect(export.connect_options(host_nqn=stranger))
    assert refused.value.errno in (errno.EIO, errno.EPERM, errno.EACCES)
    assert controllers_for(export.subnqn) == []


def test_io_max_riops_cap_holds_under_fio(attached):
    _, disk = attached
    majmin = (Path("/sys/block") / disk / "dev").read_text().strip()
    root = Path("/sys/fs/cgroup")
    if "io" not in (root / "cgroup.subtree_control").read_text().split():
        (root / "cgroup.subtree_control").write_text("+io")
    group = root / "lab-smoke-io"
    group.mkdir(exist_ok=True)
    job = ["--name=randread", f"--filename=/dev/{disk}", "--rw=randread", "--bs=4k",
           "--direct=1", "--ioengine=libaio", "--iodepth=16", "--time_based", "--size=1G"]
    try:
        uncapped = fio_json(group, *job, "--runtime=4")["jobs"][0]["read"]["iops"]
        cap = 200
        (group / "io.max").write_text(f"{majmin} riops={cap}")
        assert f"riops={cap}" in (group / "io.max").read_text()
        capped = fio_json(group, *job, "--runtime=8", "--ramp_time=1")["jobs"][0]["read"]["iops"]
    finally:
        (group / "io.max").write_text(f"{majmin} riops=max")
        group.rmdir()
    print(f"uncapped {uncapped:.0f} IOPS, io.max riops={cap}: {capped:.1f} IOPS")
    assert uncapped > 1.5 * cap, "the device must be faster than the cap for the test to mean anything"
    assert abs(capped - cap) <= 0.10 * cap
