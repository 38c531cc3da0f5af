"""Acting as kubelet: stage and publish a volume for a pod, and take it away again."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from sluice_proto import csi_pb2 as pb
from tests.conformance.client import Csi
from tests.lab.kernel import lvs_json, port_links, read_block, sluice_subsystems, write_block
from tests.lab.processes import AgentProcess

KUBELET = Path("/var/lib/kubelet-lab")
POD_UID_KEY = "csi.storage.k8s.io/pod.uid"


def paths(volume_id: str) -> tuple[str, str]:
    key = hashlib.sha256(volume_id.encode()).hexdigest()[:16]
    staging = KUBELET / "plugins/kubernetes.io/csi/csi.sluice.dev" / key / "globalmount"
    target = KUBELET / "pods" / str(uuid.uuid4()) / "volumes/kubernetes.io~csi/pvc/mount"
    return str(staging), str(target)


class Attached:
    """A volume staged and published on one node, as kubelet leaves it for a pod."""

    def __init__(self, ctl: Csi, node: Csi, volume: pb.Volume, cap: pb.VolumeCapability,
                 pod_uid: str = "") -> None:
        """`pod_uid`: what kubelet passes with podInfoOnMount (the pod's cgroup gets the limits)."""
        self.ctl, self.node, self.volume, self.cap = ctl, node, volume, cap
        self.node_id = node.node.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
        self.staging, self.target = paths(volume.volume_id)
        self.pod_context = {**volume.volume_context, **({POD_UID_KEY: pod_uid} if pod_uid else {})}
        self.publish_context: dict[str, str] = {}

    def __enter__(self) -> Attached:
        ctx = self.publish_context = self.ctl.publish(self.volume.volume_id, self.node_id, self.cap)
        self.stage()
        self.node.node.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=self.volume.volume_id, publish_context=ctx, staging_target_path=self.staging,
            target_path=self.target, volume_capability=self.cap, volume_context=self.pod_context),
            timeout=120)
        return self

    def stage(self) -> None:
        self.node.node.NodeStageVolume(pb.NodeStageVolumeRequest(
            volume_id=self.volume.volume_id, publish_context=self.publish_context,
            staging_target_path=self.staging, volume_capability=self.cap,
            volume_context=self.volume.volume_context), timeout=300)

    def __exit__(self, *exc) -> None:
        vid = self.volume.volume_id
        self.node.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=self.target))
        self.node.node.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=vid,
                                                                     staging_target_path=self.staging))
        self.ctl.unpublish(vid, self.node_id)

    @property
    def block(self) -> bool:
        return self.cap.HasField("block")

    def write(self, data: bytes) -> None:
        if self.block:
            write_block(self.target, data)
        else:
            write_synced(Path(self.target) / "payload", data)

    def read_digest(self, length: int) -> str:
        if self.block:
            return hashlib.sha256(read_block(self.target, length)).hexdigest()
        return hashlib.sha256((Path(self.target) / "payload").read_bytes()).hexdigest()

    def stats(self) -> pb.NodeGetVolumeStatsResponse:
        return self.node.node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
            volume_id=self.volume.volume_id, volume_path=self.target))


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_file(path: Path, size: int) -> str:
    """`size` random bytes written to `path` and fsynced; returns their sha256."""
    data = os.urandom(size)
    write_synced(path, data)
    return hashlib.sha256(data).hexdigest()


def assert_nothing_left(agent: AgentProcess) -> None:
    assert [lv["lv_name"] for lv in lvs_json(agent_vg(agent)) if lv["lv_name"] != "pool"] == []
    assert sluice_subsystems() == [] and port_links() == []
    assert str(KUBELET) not in Path("/proc/mounts").read_text()
    assert list(Path("/sys/class/nvme").iterdir()) == []


def agent_vg(agent: AgentProcess) -> str:
    return agent.argv[agent.argv.index("--vg") + 1]
