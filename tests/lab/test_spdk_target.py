"""A real SPDK nvmf_tgt inside the lab guest (an x86-64-v2 build runs under TCG; the guest
has no hugepages: --no-huge), driven by the target agent with --backend spdk, its base
bdev an aio bdev on a scratch disk. A host attached with the kernel NVMe/TCP initiator
is writing while nvmf_tgt is killed and started again: nobody calls the agent, its
replay loop puts the export (and its limit) back, the host reconnects by itself within
its ctrl_loss_tmo, the writer never sees an error, and a file fsynced before is intact.

It needs a real SPDK v26.05 nvmf_tgt: SLUICE_SPDK_NVMF_TGT=/path/to/nvmf_tgt (passed into
the guest, e.g. `lab/vm.py -- env SLUICE_SPDK_NVMF_TGT=... .venv/bin/python -m pytest ...`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nvme_target.agent.client import AgentClient
from nvme_target.model import QoS
from tests.fakes.spdk_real import RealSpdkServer
from tests.lab.kernel import SCRATCH_DISKS, connect, disconnect, new_host_nqn, sh, wait_for, wait_live
from tests.lab.processes import _Process

MiB = 1 << 20
START_TIMEOUT = 600  # seconds: TCG, 9p and a machine shared with other VMs
NVMF_TGT = os.environ.get("SLUICE_SPDK_NVMF_TGT", "")
pytestmark = [pytest.mark.lab, pytest.mark.skipif(
    not NVMF_TGT, reason="needs a real SPDK v26.05 build: set SLUICE_SPDK_NVMF_TGT (CI has none)")]


class SpdkAgentProcess(_Process):
    """`python -m nvme_target --backend spdk` on an nvmf_tgt socket, one portal on lo."""

    name = "SPDK target agent"

    def __init__(self, workdir: Path, spdk_socket: Path, aio: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "agent.sock"
        super().__init__([sys.executable, "-m", "nvme_target", "--backend", "spdk",
                          "--spdk-socket", str(spdk_socket), "--spdk-base-bdev", "base0",
                          "--spdk-aio-file", aio, "--socket", str(self.socket),
                          "--state-dir", str(workdir / "state"), "--portal", "127.0.0.1:4420",
                          "--target-id", "lab-spdk"], workdir / "agent.log")
        self.client = AgentClient(f"unix:{self.socket}", timeout=300)

    def ready(self) -> bool:
        return self.client.health().ready

    def start(self) -> None:
        """As _Process.start, with room for a Python start over 9p on a busy machine."""
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)
        try:
            wait_for(self._ready, START_TIMEOUT, f"the {self.name} to serve", interval=0.5)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log: {self.log.read_text()[-3000:]}") from None


def state(ctrl: str) -> str:
    try:
        return (Path("/sys/class/nvme") / ctrl / "state").read_text().strip()
    except OSError:
        return "gone"


def test_a_host_writing_through_an_nvmf_tgt_restart_reconnects_and_keeps_its_data(tmp_path, kernel_modules):
    disk = SCRATCH_DISKS[0]
    sh("wipefs", "-a", disk)
    target = RealSpdkServer(tmp_path / "spdk", image=disk, binary=NVMF_TGT, start_timeout=START_TIMEOUT)
    agent = SpdkAgentProcess(tmp_path / "agent", target.path, disk)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    export = writer = None
    try:
        agent.start()
        vol = agent.client.create_volume("pvc-spdk-lab", 64 * MiB)
        agent.client.set_qos(vol.id, QoS(write_bps=50 * MiB))
        host = new_host_nqn()
        export = agent.client.add_host(vol.id, host)
        ctrl, dev = connect(export, host, "ctrl_loss_tmo=300,reconnect_delay=1")
        sh("mkfs.ext4", "-q", dev)
        sh("mount", dev, str(mnt))
        payload = os.urandom(4 * MiB)
        with open(mnt / "before", "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        writer = subprocess.Popen(["sh", "-c", f'while [ ! -e "{tmp_path}/stop" ]; do '
                                   f'dd if=/dev/urandom of="{mnt}/during" bs=64k count=16 conv=fsync '
                                   f'status=none || exit 1; done'])
        wait_for(lambda: (mnt / "during").exists(), 60, "the writer to write")

        target.down()  # SIGKILL: nvmf_tgt forgets transport, subsystem, namespace, host, listener, limit
        wait_for(lambda: state(ctrl) != "live", 120, "the host to notice")
        started = time.monotonic()
        target.up()  # a new nvmf_tgt; nobody calls the agent from here on
        up = time.monotonic()
        wait_live(ctrl, 240)
        live = time.monotonic()
        print(f"nvmf_tgt answering {up - started:.1f} s after its start; host live again "
              f"{live - up:.1f} s after that (ctrl {ctrl})")
        limits = target.target.bdev_get_bdevs(name=f"sluice/{vol.id}")[0]["assigned_rate_limits"]
        assert limits["w_mbytes_per_sec"] == 50, limits

        size = (mnt / "during").stat().st_mtime
        wait_for(lambda: (mnt / "during").stat().st_mtime != size, 120, "the writer to go on after the restart")
        (tmp_path / "stop").touch()
        assert writer.wait(timeout=300) == 0, "the writer saw an I/O error"
        writer = None
        sh("umount", str(mnt))
        sh("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches")
        sh("mount", dev, str(mnt))
        assert hashlib.sha256((mnt / "before").read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
        assert agent.client.health().ready and agent.client.health().problems == ()
    finally:
        (tmp_path / "stop").touch()
        if writer is not None:
            writer.kill()
        sh("umount", str(mnt), check=False)
        if export is not None:
            disconnect(export)
        agent.stop()
        target.stop()
