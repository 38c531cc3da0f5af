"""End to end through the gRPC sockets, acting as the sidecars and kubelet would, on the
real kernel: controller + target agent + two node plugins (two host NQNs) in one VM.

Create → ControllerPublish → Stage → Publish → write 64 MiB, fsync, sha256 → Unpublish →
Unstage → ControllerUnpublish → the second node: publish, stage, publish → same sha256 →
expand online → snapshot → clone → the clone has the snapshot's data → clean up, with
nothing left in lvs, configfs, /proc/mounts or /sys/class/nvme. Mount (ext4, xfs) and Block.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import grpc
import pytest

from csi_driver.node import devices
from sluice_proto import csi_pb2 as pb
from tests.conformance.client import MiB, Csi, block_cap, error_of, mount_cap
from tests.conformance.node import NodeConformance
from tests.lab.attach import Attached, assert_nothing_left, paths
from tests.lab.kernel import sluice_subsystems
from tests.lab.pods import make_pod
from tests.lab.processes import AgentProcess, AllInOneProcess, ControllerProcess, NodeProcess

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cluster(thin_pool, tmp_path_factory):
    vg, pool = thin_pool
    work = tmp_path_factory.mktemp("cluster")
    agent = AgentProcess(work / "agent", vg, pool, "/dev/vda", target_id="local", zone="z1")
    agent.start()
    controller = ControllerProcess(work / "controller", [agent])
    controller.start()
    nodes = [NodeProcess(work / f"node{i}", zone="z1") for i in (1, 2)]
    for node in nodes:
        node.start()
    channels = [grpc.insecure_channel(f"unix:{p.endpoint}") for p in (controller, *nodes)]
    yield agent, Csi(channels[0]), [Csi(ch) for ch in channels[1:]]
    for ch in channels:
        ch.close()
    for proc in (*nodes, controller):
        proc.stop()
    agent.empty()
    agent.stop()


@pytest.mark.parametrize("cap", [mount_cap(fs="ext4"), mount_cap(fs="xfs"), block_cap()], ids=["ext4", "xfs", "block"])
def test_volume_travels_between_nodes_grows_and_clones(cluster, cap):
    agent, ctl, (node1, node2) = cluster
    kind = cap.mount.fs_type or "block"
    vol = ctl.create(f"pvc-e2e-{kind}", size=256 * MiB, caps=[cap])
    payload = os.urandom(64 * MiB)
    digest = hashlib.sha256(payload).hexdigest()

    with Attached(ctl, node1, vol, cap) as on1:
        on1.write(payload)
        stats = on1.stats()
        assert not stats.volume_condition.abnormal
        assert stats.usage[0].total > 0

    with Attached(ctl, node2, vol, cap) as on2:
        assert on2.read_digest(len(payload)) == digest
        grown = ctl.controller.ControllerExpandVolume(pb.ControllerExpandVolumeRequest(
            volume_id=vol.volume_id, capacity_range=pb.CapacityRange(required_bytes=512 * MiB),
            volume_capability=cap))
        assert grown.node_expansion_required == (not on2.block)
        size = node2.node.NodeExpandVolume(pb.NodeExpandVolumeRequest(
            volume_id=vol.volume_id, volume_path=on2.target, staging_target_path=on2.staging,
            capacity_range=pb.CapacityRange(required_bytes=512 * MiB), volume_capability=cap)).capacity_bytes
        assert size == grown.capacity_bytes
        total = on2.stats().usage[0].total
        assert total > 400 * MiB, f"the {kind} volume must look bigger to the pod after expansion ({total})"
        snap = ctl.snapshot(f"snap-e2e-{kind}", vol.volume_id)
        on2.write(os.urandom(64 * MiB))  # the volume moves on; the snapshot must not

    source = pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id))
    clone = ctl.create(f"pvc-e2e-{kind}-clone", size=512 * MiB, caps=[cap], source=source)
    with Attached(ctl, node1, clone, cap) as on_clone:
        assert on_clone.read_digest(len(payload)) == digest

    ctl.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    for v in (clone, vol):
        ctl.delete(v.volume_id)
    assert_nothing_left(agent)


def test_all_in_one_mode(thin_pool, tmp_path):
    """`--mode all`: controller + node + an in-process target in one process, as a
    single-node install runs it: a volume's whole life through one socket."""
    vg, pool = thin_pool
    proc = AllInOneProcess(tmp_path, vg, pool)
    proc.start()
    csi = Csi(grpc.insecure_channel(f"unix:{proc.endpoint}"))
    try:
        cap = mount_cap(fs="ext4")
        vol = csi.create("pvc-aio", size=64 * MiB, caps=[cap], parameters={"qos.writeIOPS": "200"})
        assert vol.volume_id.startswith("local/")
        pod = make_pod("systemd", "besteffort")
        try:
            with Attached(csi, csi, vol, cap, pod_uid=pod.uid) as attached:
                assert attached.node_id.startswith("nqn.2014-08.org.nvmexpress:uuid:")
                attached.write(os.urandom(4 * MiB))
                device = devices.find_by_uuid(attached.publish_context["nvme.nsUUID"])
                assert "wiops=200" in pod.io_max(device)
        finally:
            pod.remove()
        csi.delete(vol.volume_id)
        assert csi.all_volume_ids() == []
    finally:
        csi.channel.close()
        proc.stop()
    assert sluice_subsystems() == [] and list(Path("/sys/class/nvme").iterdir()) == []


class TestNodeConformanceOnTheKernel(NodeConformance):
    @pytest.fixture
    def node(self, cluster):
        return cluster[2][0]


def test_connect_refused_carries_the_kernels_reason(cluster):
    agent, ctl, (node1, node2) = cluster
    cap = mount_cap()
    vol = ctl.create("pvc-refused", size=64 * MiB, caps=[cap])
    node1_id = node1.node.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
    ctx = ctl.publish(vol.volume_id, node1_id, cap)  # published to node1 only
    staging, _ = paths(vol.volume_id)
    err = error_of(lambda: node2.node.NodeStageVolume(pb.NodeStageVolumeRequest(
        volume_id=vol.volume_id, publish_context=ctx, staging_target_path=staging, volume_capability=cap,
        volume_context=vol.volume_context), timeout=120))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not allowed" in err.details(), err.details()
    assert list(Path("/sys/class/nvme").iterdir()) == [], "a refused connect leaves no controller"
    ctl.unpublish(vol.volume_id, node1_id)
    ctl.delete(vol.volume_id)


def test_single_node_single_writer_has_one_publication(cluster):
    agent, ctl, (node1, _) = cluster
    cap = mount_cap("SINGLE_NODE_SINGLE_WRITER")
    vol = ctl.create("pvc-sn-sw", size=64 * MiB, caps=[cap])
    with Attached(ctl, node1, vol, cap) as attached:
        _, other_target = paths(vol.volume_id)
        err = error_of(lambda: node1.node.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=vol.volume_id, staging_target_path=attached.staging, target_path=other_target,
            volume_capability=cap)))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    ctl.delete(vol.volume_id)
