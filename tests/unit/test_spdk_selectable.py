"""`--backend spdk` in the target agent and `--target-backend spdk` in all-in-one mode,
as processes, against the fake SPDK target: what anyone with a real nvmf_tgt runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from nvme_target.agent.client import AgentClient
from nvme_target.model import QoS
from sluice_proto import csi_pb2 as pb
from tests.conformance.client import MiB, Csi, block_cap
from tests.fakes.spdk_target import FakeSpdk, FakeSpdkServer

IMAGE = "/srv/sluice/spdk.img"
HOST = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"


@pytest.fixture
def spdk(tmp_path):
    server = FakeSpdkServer(tmp_path / "spdk.sock", FakeSpdk({IMAGE: 4 << 30}))
    yield server
    server.stop()


def launch(argv: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT)


def wait(check, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"not ready: {log.read_text()[-2000:]}")


def test_the_agent_serves_an_spdk_target(spdk, tmp_path):
    sock = tmp_path / "agent.sock"
    proc = launch(["-m", "nvme_target", "--backend", "spdk", "--spdk-socket", str(spdk.path),
                   "--spdk-base-bdev", "base0", "--spdk-aio-file", IMAGE, "--socket", str(sock),
                   "--state-dir", str(tmp_path / "state"), "--target-id", "spdk-a"], tmp_path / "agent.log")
    client = AgentClient(f"unix:{sock}", timeout=60)
    try:
        wait(lambda: client.health().ready, proc, tmp_path / "agent.log")
        assert client.info().backend == "spdk"
        vol = client.create_volume("pvc-agent", 64 * MiB)
        client.set_qos(vol.id, QoS(write_bps=8 * MiB))  # kept: SPDK takes limits once exported
        assert client.get_volume(vol.id).qos == QoS(write_bps=8 * MiB)
        client.add_host(vol.id, HOST)
        assert spdk.target.bdev_get_bdevs(name=f"sluice/{vol.id}")[0]["assigned_rate_limits"]["w_mbytes_per_sec"] == 8
        client.delete_volume(vol.id, unexport=True)
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


def test_all_in_one_mode_provisions_and_modifies_on_spdk(spdk, tmp_path):
    endpoint = tmp_path / "csi.sock"
    proc = launch(["-m", "csi_driver", "--mode", "all", "--endpoint", f"unix://{endpoint}",
                   "--target-backend", "spdk", "--target-spdk-socket", str(spdk.path),
                   "--target-spdk-base-bdev", "base0", "--target-spdk-aio-file", IMAGE,
                   "--target-state-dir", str(tmp_path / "target"), "--node-state-dir", str(tmp_path / "node"),
                   "--nvme-config-dir", str(tmp_path / "nvme")], tmp_path / "all.log")
    channel = grpc.insecure_channel(f"unix:{endpoint}")
    csi = Csi(channel)
    try:
        wait(lambda: csi.identity.GetPluginInfo(pb.GetPluginInfoRequest(), timeout=2).name, proc,
             tmp_path / "all.log")
        vol = csi.create("pvc-aio-spdk", caps=[block_cap()], parameters={"qos.readBPS": "10Mi"})
        csi.publish(vol.volume_id, HOST, cap=block_cap())  # SPDK takes limits once exported
        limits = spdk.target.bdev_get_bdevs(name=f"sluice/{vol.volume_id.split('/')[1]}")[0]["assigned_rate_limits"]
        assert limits["r_mbytes_per_sec"] == 10
        csi.modify(vol.volume_id, {"qos.readIOPS": "400", "qos.writeIOPS": "700"})
        limits = spdk.target.bdev_get_bdevs(name=f"sluice/{vol.volume_id.split('/')[1]}")[0]["assigned_rate_limits"]
        assert (limits["rw_ios_per_sec"], limits["r_mbytes_per_sec"]) == (2000, 10)
        csi.unpublish(vol.volume_id, HOST)
        csi.delete(vol.volume_id)
        assert spdk.target.bdev_lvol_get_lvols(lvs_name="sluice") == []
    finally:
        channel.close()
        proc.terminate()
        proc.wait(timeout=30)
