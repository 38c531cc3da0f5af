"""Every node call converges after a crash at any step, on the real kernel.

The plugin runs with the test-only fault hook (csi_driver/node/faults.py) and SIGKILLs
itself at one step boundary of NodeStage / NodePublish / NodeUnpublish / NodeUnstage per
round; the test restarts it and retries the call that died (or, for a stage that died
before its record was saved, gives up and unstages as kubelet may), then completes the
cycle. After every round nothing is left: no nvme controller, no mount under the kubelet
directory, no staging record, no io.max line in the pod's cgroup. A publish that died
is either absent or read-only already (the bind is made with its final flags at once).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from csi_driver.node import devices, faults, mounts
from sluice_proto import csi_pb2 as pb
from tests.conformance.client import MiB, Csi, mount_cap
from tests.lab.attach import KUBELET, POD_UID_KEY, paths
from tests.lab.pods import make_pod
from tests.lab.processes import AgentProcess, ControllerProcess, NodeProcess

pytestmark = pytest.mark.lab
CAP = mount_cap(fs="ext4")
STEPS = ["stage:connected", "stage:mounted", "stage:recorded", "publish:prepared", "publish:mounted",
         "publish:recorded", "unpublish:unmounted", "unstage:unmounted", "unstage:disconnected"]


@pytest.fixture(scope="module")
def crashing(thin_pool, tmp_path_factory):
    vg, pool = thin_pool
    work = tmp_path_factory.mktemp("crash")
    agent = AgentProcess(work / "agent", vg, pool, "/dev/vda", target_id="local", zone="z1")
    agent.start(timeout=300)
    controller = ControllerProcess(work / "controller", [agent])
    controller.start(timeout=300)
    fault_file = work / "fault"
    os.environ[faults.ENV] = str(fault_file)  # for every start of the node plugin in this module
    node = NodeProcess(work / "node", zone="z1")
    try:
        node.start(timeout=300)
        ctl_channel = grpc.insecure_channel(f"unix:{controller.endpoint}")
        yield Csi(ctl_channel), node, fault_file, work
        ctl_channel.close()
    finally:
        del os.environ[faults.ENV]
    node.stop()
    controller.stop()
    agent.empty()
    agent.stop()


class Kubelet:
    """The four node calls for one volume and one pod, on a plugin that may restart."""

    def __init__(self, node: NodeProcess, vol: pb.Volume, ctx: dict, pod_uid: str) -> None:
        self.node, self.vol, self.ctx, self.pod_uid = node, vol, ctx, pod_uid
        self.staging, self.target = paths(vol.volume_id)
        self.connect()

    def connect(self) -> None:
        self.csi = Csi(grpc.insecure_channel(f"unix:{self.node.endpoint}"))

    def call(self, name: str) -> None:
        vid, node = self.vol.volume_id, self.csi.node
        if name == "stage":
            node.NodeStageVolume(pb.NodeStageVolumeRequest(
                volume_id=vid, publish_context=self.ctx, staging_target_path=self.staging, volume_capability=CAP,
                volume_context=self.vol.volume_context), timeout=300)
        elif name == "publish":
            node.NodePublishVolume(pb.NodePublishVolumeRequest(
                volume_id=vid, publish_context=self.ctx, staging_target_path=self.staging, target_path=self.target,
                volume_capability=CAP, readonly=True,
                volume_context={**self.vol.volume_context, POD_UID_KEY: self.pod_uid}), timeout=120)
        elif name == "unpublish":
            node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=self.target),
                                     timeout=120)
        else:
            node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=self.staging),
                                   timeout=120)


def test_every_call_converges_after_a_crash_at_every_step(crashing):
    ctl, node, fault_file, work = crashing
    vol = ctl.create("pvc-crash", size=64 * MiB, caps=[CAP], parameters={"qos.readIOPS": "500"})
    pod = make_pod()
    csi = Csi(grpc.insecure_channel(f"unix:{node.endpoint}"))
    node_id = csi.node.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
    ctx = dict(ctl.publish(vol.volume_id, node_id, CAP))
    try:
        for step in STEPS:
            kubelet = Kubelet(node, vol, ctx, pod.uid)
            fault_file.write_text(step)
            majmin = ""
            for name in ("stage", "publish", "unpublish", "unstage"):
                try:
                    kubelet.call(name)
                except grpc.RpcError as err:
                    assert step.startswith(name) and not fault_file.exists(), (step, name, err)
                    node.start(timeout=300)  # the plugin killed itself at `step` (slow to start on a busy machine)
                    kubelet.connect()
                    if step == "publish:prepared":
                        assert mounts.at(kubelet.target) is None, "a publish that died must leave nothing"
                    if step == "publish:mounted":
                        assert mounts.at(kubelet.target).read_only, "the pod's mount has its final flags at once"
                    if step == "stage:connected":  # kubelet gives up: unstage without a record
                        kubelet.call("unstage")
                        break
                    kubelet.call(name)
                if name == "publish":
                    device = devices.find_by_uuid(ctx["nvme.nsUUID"])
                    majmin = devices.majmin(device)
                    assert pod.io_max(device).startswith(majmin), "the limits reach the pod"
            assert not fault_file.exists(), f"the fault at {step} never fired"
            assert_nothing_left(work, pod, majmin)
    finally:
        pod.remove()
        ctl.unpublish(vol.volume_id, node_id)
        ctl.delete(vol.volume_id)


def assert_nothing_left(work: Path, pod, majmin: str) -> None:
    assert list(Path("/sys/class/nvme").iterdir()) == []
    assert str(KUBELET) not in Path("/proc/mounts").read_text()
    assert list(KUBELET.rglob("*.sluice.json")) == []
    assert list((work / "node" / "state").rglob("*.json")) == []
    io_max = pod.cgroup / "io.max"
    assert not majmin or not io_max.exists() or majmin not in io_max.read_text()
