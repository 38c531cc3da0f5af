"""The node plugin across restarts and failures, on the real kernel:
- the plugin killed between any two steps: the repeated call converges;
- the target restarted (agent killed, configfs wiped) under a mounted volume: the
  initiator reconnects within ctrl_loss_tmo, the condition reads abnormal meanwhile,
  and a file fsynced before is intact after;
- a node "reboot" (mounts and controllers gone, staging records left): stage works
  again, and unstage of a volume whose controller vanished cleans up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from csi_driver.node import fabrics
from sluice_proto import csi_pb2 as pb
from tests.conformance.client import MiB, Csi, mount_cap
from tests.lab.attach import paths, write_file
from tests.lab.cluster import running
from tests.lab.kernel import sh, sluice_subsystems, wait_for, wipe_configfs
from tests.lab.processes import NodeProcess

pytestmark = pytest.mark.lab
CAP = mount_cap(fs="ext4")


@pytest.fixture(scope="module")
def cluster(thin_pool, tmp_path_factory):
    with running(thin_pool, tmp_path_factory.mktemp("failures")) as c:
        yield c.agent, c.ctl, c.node


def node_csi(node: NodeProcess) -> Csi:
    return Csi(grpc.insecure_channel(f"unix:{node.endpoint}"))


def restart(node: NodeProcess) -> Csi:
    node.kill()
    node.start()
    return node_csi(node)


class Flow:
    def __init__(self, ctl: Csi, name: str, parameters=None) -> None:
        self.ctl = ctl
        self.vol = ctl.create(name, size=128 * MiB, caps=[CAP], parameters=parameters or {})
        self.staging, self.target = paths(self.vol.volume_id)

    def controller_publish(self, node: Csi) -> dict:
        self.node_id = node.node.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
        self.ctx = dict(self.ctl.publish(self.vol.volume_id, self.node_id, CAP))
        return self.ctx

    def stage(self, node: Csi) -> None:
        node.node.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=self.vol.volume_id, publish_context=self.ctx, staging_target_path=self.staging,
            volume_capability=CAP, volume_context=self.vol.volume_context), timeout=300)

    def publish(self, node: Csi) -> None:
        node.node.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=self.vol.volume_id, publish_context=self.ctx, staging_target_path=self.staging,
            target_path=self.target, volume_capability=CAP, volume_context=self.vol.volume_context), timeout=120)

    def unpublish(self, node: Csi) -> None:
        node.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=self.vol.volume_id,
                                                                    target_path=self.target))

    def unstage(self, node: Csi) -> None:
        node.node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=self.vol.volume_id,
                                                                staging_target_path=self.staging))

    def stats(self, node: Csi) -> pb.NodeGetVolumeStatsResponse:
        return node.node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(volume_id=self.vol.volume_id,
                                                                         volume_path=self.target))

    def finish(self) -> None:
        self.ctl.unpublish(self.vol.volume_id, self.node_id)
        self.ctl.delete(self.vol.volume_id)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plugin_restart_between_every_step(cluster):
    _, ctl, node = cluster
    flow = Flow(ctl, "pvc-restarts")
    csi = node_csi(node)
    flow.controller_publish(csi)
    flow.stage(csi)
    csi = restart(node)
    flow.stage(csi)                      # repeated after a restart: converges
    flow.publish(csi)
    csi = restart(node)
    flow.publish(csi)
    sha = write_file(Path(flow.target) / "f", 4 * MiB)
    assert digest(Path(flow.target) / "f") == sha
    flow.unpublish(csi)
    csi = restart(node)
    flow.unpublish(csi)
    flow.unstage(csi)
    csi = restart(node)
    flow.unstage(csi)
    assert not Path(flow.target).exists()
    assert str(flow.staging) not in Path("/proc/mounts").read_text()
    assert fabrics.controllers(flow.ctx["nvme.subnqn"]) == []
    flow.finish()


def test_target_restart_under_a_mounted_volume(cluster):
    agent, ctl, node = cluster
    flow = Flow(ctl, "pvc-target-restart", {"nvme.ctrlLossTmo": "120", "nvme.reconnectDelay": "1"})
    csi = node_csi(node)
    flow.controller_publish(csi)
    flow.stage(csi)
    flow.publish(csi)
    sha = write_file(Path(flow.target) / "before", 8 * MiB)
    assert not flow.stats(csi).volume_condition.abnormal

    agent.kill()
    wipe_configfs()
    condition = wait_for(lambda: (c := flow.stats(csi).volume_condition).abnormal and c, 60,
                         "the volume condition to turn abnormal")
    assert "connecting" in condition.message or "resetting" in condition.message
    agent.start()  # restores the export before it serves

    wait_for(lambda: not flow.stats(csi).volume_condition.abnormal, 120, "the initiator to reconnect")
    sh("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches")
    assert digest(Path(flow.target) / "before") == sha
    write_file(Path(flow.target) / "after", 1 * MiB)
    flow.unpublish(csi)
    flow.unstage(csi)
    flow.finish()


def test_node_reboot_then_stage_again_and_unstage_without_a_controller(cluster):
    agent, ctl, node = cluster
    flow = Flow(ctl, "pvc-reboot")
    csi = node_csi(node)
    flow.controller_publish(csi)
    flow.stage(csi)
    flow.publish(csi)
    sha = write_file(Path(flow.target) / "data", 2 * MiB)

    # "reboot": every mount and controller is gone, configfs is empty; records remain
    node.kill()
    sh("umount", flow.target)
    sh("umount", flow.staging)
    fabrics.disconnect(flow.ctx["nvme.subnqn"])
    agent.kill()
    wipe_configfs()
    agent.start()
    node.start()
    csi = node_csi(node)
    flow.stage(csi)
    flow.publish(csi)
    assert digest(Path(flow.target) / "data") == sha

    # the controller vanishes under the node: unpublish and unstage still clean up
    fabrics.disconnect(flow.ctx["nvme.subnqn"])
    flow.unpublish(csi)
    flow.unstage(csi)
    assert str(flow.staging) not in Path("/proc/mounts").read_text()
    assert not list(Path(flow.staging).parent.glob("*.sluice.json"))
    flow.finish()
    assert sluice_subsystems() == []
