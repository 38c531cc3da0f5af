"""What the lab guest provides besides the kernel: udev, cgroup v2, configfs, loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.kernel import sh

pytestmark = pytest.mark.lab


def test_udevd_is_running():
    assert Path("/run/udev/control").exists()
    assert sh("pgrep", "-x", "systemd-udevd").returncode == 0


def test_cgroup_v2_with_io_controller():
    root = Path("/sys/fs/cgroup")
    assert (root / "cgroup.controllers").exists(), "unified (v2) hierarchy"
    assert "io" in (root / "cgroup.controllers").read_text().split()


def test_configfs_and_loopback():
    mounts = Path("/proc/mounts").read_text()
    assert " /sys/kernel/config configfs " in mounts
    assert "UP" in sh("ip", "-o", "link", "show", "lo").stdout


def test_scratch_disks_start_blank(scratch_signatures):
    for disk in ("vda", "vdb"):
        assert Path("/sys/block", disk).exists()
    assert scratch_signatures == {"/dev/vda": 2, "/dev/vdb": 2}, "no signature on a fresh scratch disk"
