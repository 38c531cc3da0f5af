"""The built image on the lab kernel, set up as the node and agent DaemonSets mount it
(/dev, /sys, /proc, /lib/modules, /run/udev from the host): its own modprobe loads the
NVMe/TCP and thin-pool modules, its own lvm builds a thin pool on a scratch disk, its own
mkfs.ext4 / mkfs.xfs format thin volumes that its blkid then recognises, and its nvme
finds the fabrics device. Runs in the lab VM: `make image-test`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from sluice_proto import csi_pb2 as csi
from sluice_proto import csi_pb2_grpc
from tests.image.rootfs import ROOTFS, run
from tests.lab.kernel import wait_for

DISK = "/dev/vda"
HOST_DIRS = ("/dev", "/sys", "/proc", "/lib/modules", "/run/udev")
pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def image_as_deployed():
    mounted = []
    try:
        for host in HOST_DIRS:
            inside = ROOTFS / host.lstrip("/")
            inside.mkdir(parents=True, exist_ok=True)   # the guest's root has a writable overlay
            subprocess.run(["mount", "--rbind", host, str(inside)], check=True)
            mounted.append(inside)
        yield
    finally:
        for inside in reversed(mounted):
            subprocess.run(["umount", "-R", str(inside)], check=False)


def ok(*cmd: str) -> str:
    out = run(*cmd)
    assert out.returncode == 0, f"{' '.join(cmd)}: {out.stdout}{out.stderr}"
    return out.stdout


def lvm(*args: str) -> str:
    return ok("lvm", args[0], "--devices", DISK, *args[1:])


def test_the_images_tools_work_on_the_real_kernel(image_as_deployed):
    ok("modprobe", "-a", "nvme-tcp", "nvme-fabrics", "dm-thin-pool")
    assert Path("/sys/module/nvme_tcp").is_dir() and Path("/dev/nvme-fabrics").exists()
    assert ok("nvme", "gen-hostnqn").startswith("nqn.")
    ok("nvme", "list")
    lvm("pvcreate", "-q", DISK)
    lvm("vgcreate", "-q", "imgvg", DISK)
    try:
        lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "256M", "-n", "pool", "imgvg")
        for name, size, fs in (("e", "64M", "ext4"), ("x", "320M", "xfs")):
            lvm("lvcreate", "-q", "--thin", "-V", size, "-n", name, "imgvg/pool")
            device = f"/dev/imgvg/{name}"
            ok(f"mkfs.{fs}", "-q", *(["-f"] if fs == "xfs" else []), device)
            assert ok("blkid", "-o", "value", "-s", "TYPE", device).strip() == fs
        assert "thin-pool" in lvm("lvs", "-o", "lv_name,segtype", "imgvg")
    finally:
        run("lvm", "vgremove", "--devices", DISK, "-q", "-f", "imgvg")
        run("lvm", "pvremove", "--devices", DISK, "-q", "-f", DISK)


def test_the_node_plugin_in_the_image_starts_on_the_real_kernel(image_as_deployed):
    """`sluice --mode=node` from the image serves its CSI socket (identity answers)."""
    sock = ROOTFS / "run" / "sluice-node.sock"
    sock.unlink(missing_ok=True)
    env = ["/usr/bin/env", "-i", "PATH=/opt/sluice/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    proc = subprocess.Popen(["chroot", str(ROOTFS), *env, "sluice", "--mode=node", "--endpoint=unix:///run/sluice-node.sock",
                             "--node-state-dir=/run/sluice-node", "--nvme-config-dir=/run/sluice-nvme"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # generous: Python under TCG on a loaded 2-core machine takes minutes to import grpc
        wait_for(lambda: sock.exists() or proc.poll() is not None, 600, "the node plugin's socket", interval=0.5)
        assert proc.poll() is None, proc.stdout.read()
        with grpc.insecure_channel(f"unix:{sock}") as channel:
            info = csi_pb2_grpc.NodeStub(channel).NodeGetInfo(csi.NodeGetInfoRequest(), timeout=300)
        assert info.node_id.startswith("nqn.")
        assert dict(info.accessible_topology.segments) == {"csi.sluice.dev/fabric": "default"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_images_agent_without_its_volume_group_says_what_to_run(image_as_deployed):
    """On a node whose VG is missing the agent exits at once, naming the commands."""
    out = run("sluice", "--mode=agent", "--vg=novg", "--pool=pool", f"--pv={DISK}", "--socket=/run/agent.sock",
              "--state-dir=/run/agent-state", timeout=180)
    assert out.returncode == 1, out.stdout + out.stderr
    said = out.stdout + out.stderr
    assert f"vgcreate novg {DISK} && lvcreate --type thin-pool -l 95%FREE -n pool novg" in said, said
