"""Target outages longer than ctrl_loss_tmo, and many volumes at once, on the real kernel.

- ctrl_loss_tmo of 3 s, the target gone for 3x that: the volume reads abnormal during the
  outage (the kernel drops the controller), then a new pod's NodePublish reconnects and
  stages again instead of handing out the dead filesystem; a file fsynced before the
  outage reads back identical.
- ctrlLossTmo=-1 (reconnect forever): the same outage heals by itself, without a new
  staging, and fio in the pod resumes writing.
- 20 volumes staged and published in parallel on one node, then torn down in parallel:
  all succeed, nothing is left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from csi_driver.node import devices, fabrics, mounts
from sluice_proto import csi_pb2 as pb
from tests.conformance.client import MiB, block_cap, mount_cap
from tests.lab.attach import Attached, agent_vg, assert_nothing_left, paths, write_file
from tests.lab.cluster import running
from tests.lab.kernel import sh, wait_for, wipe_configfs
from tests.lab.pods import make_pod
from tests.lab.processes import AgentProcess

pytestmark = pytest.mark.lab
CAP = mount_cap(fs="ext4")
LOSS = 3  # seconds: nvme.ctrlLossTmo of the short-timeout volume


@pytest.fixture(scope="module")
def cluster(thin_pool, tmp_path_factory):
    with running(thin_pool, tmp_path_factory.mktemp("outage")) as c:
        yield c.agent, c.ctl, c.node_csi


def outage(agent: AgentProcess, seconds: float, during=None) -> None:
    """The target gone (process killed, nvmet configuration wiped) for `seconds`."""
    started = time.monotonic()
    agent.kill()
    wipe_configfs()
    try:
        if during is not None:
            during()
        time.sleep(max(0.0, started + seconds - time.monotonic()))  # the outage's length, not a wait
    finally:
        agent.start(timeout=300)  # restores the exports before it serves


def test_an_outage_longer_than_ctrl_loss_tmo_is_staged_again(cluster):
    agent, ctl, node = cluster
    vol = ctl.create("pvc-outage", size=64 * MiB, caps=[CAP],
                     parameters={"nvme.ctrlLossTmo": str(LOSS), "nvme.reconnectDelay": "1"})
    first = Attached(ctl, node, vol, CAP).__enter__()
    sha = write_file(Path(first.target) / "before", 4 * MiB)
    old_seq = devices.diskseq(devices.find_by_uuid(first.publish_context["nvme.nsUUID"]))
    subnqn = first.publish_context["nvme.subnqn"]

    def dropped() -> None:
        wait_for(lambda: (c := first.stats().volume_condition).abnormal and c, 60, "the volume to read abnormal")
        wait_for(lambda: fabrics.controllers(subnqn) == [], 120, "the kernel to drop the controller")
        condition = first.stats().volume_condition
        assert condition.abnormal and "no NVMe/TCP controller" in condition.message, condition

    outage(agent, 3 * LOSS, dropped)
    # a new pod: kubelet publishes from the staging it already has
    second = paths(vol.volume_id)[1]
    node.node.NodePublishVolume(pb.NodePublishVolumeRequest(
        volume_id=vol.volume_id, publish_context=first.publish_context, staging_target_path=first.staging,
        target_path=second, volume_capability=CAP, volume_context=vol.volume_context), timeout=300)
    device = devices.find_by_uuid(first.publish_context["nvme.nsUUID"])
    assert devices.diskseq(device) != old_seq, "a new disk after the controller was dropped"
    assert mounts.at(first.staging).majmin == devices.majmin(device), "the staging is on the new disk"
    sh("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches")
    assert hashlib.sha256((Path(second) / "before").read_bytes()).hexdigest() == sha
    write_file(Path(second) / "after", MiB)
    assert not node.node.NodeGetVolumeStats(pb.NodeGetVolumeStatsRequest(
        volume_id=vol.volume_id, volume_path=second)).volume_condition.abnormal
    node.node.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=vol.volume_id, target_path=second))
    first.__exit__(None, None, None)
    assert fabrics.controllers(subnqn) == []
    ctl.delete(vol.volume_id)


def test_reconnect_forever_heals_the_same_outage_and_fio_resumes(cluster):
    agent, ctl, node = cluster
    vol = ctl.create("pvc-forever", size=64 * MiB, caps=[CAP],
                     parameters={"nvme.ctrlLossTmo": "-1", "nvme.reconnectDelay": "1"})
    pod = make_pod()
    try:
        with Attached(ctl, node, vol, CAP, pod_uid=pod.uid) as attached:
            sha = write_file(Path(attached.target) / "before", 4 * MiB)
            device = devices.find_by_uuid(attached.publish_context["nvme.nsUUID"])
            # writes reaching the target: the LV's own counters (the multipath head keeps none)
            seq, stat = devices.diskseq(device), lv_stat(agent, vol.volume_id)
            before_fio = written(stat)
            # runs until stopped: however long the outage and the agent's restart take here
            fio = pod.popen("fio", "--output-format=json", "--name=resume", f"--filename={attached.target}/f",
                            "--size=16M", "--rw=randwrite", "--bs=4k", "--direct=1", "--time_based",
                            "--runtime=900")
            try:
                wait_for(lambda: written(stat) > before_fio, 120, "fio to write")
                outage(agent, 3 * LOSS, lambda: wait_for(lambda: attached.stats().volume_condition.abnormal, 60,
                                                         "the volume to read abnormal"))
                wait_for(lambda: not attached.stats().volume_condition.abnormal, 120, "the initiator to reconnect")
                healed = written(stat)
                wait_for(lambda: written(stat) > healed, 120, "fio to write again after the outage")
            finally:
                fio.send_signal(signal.SIGINT)  # fio stops, reports, exits 128 ("terminating on signal")
                out, err = fio.communicate(timeout=300)
            assert fio.returncode in (0, 128), err
            job = json.loads(out[out.index("{"):])["jobs"][0]
            assert job["error"] == 0 and job["write"]["io_bytes"] > 0, job
            assert devices.find_by_uuid(attached.publish_context["nvme.nsUUID"]) == device
            assert devices.diskseq(device) == seq, "the same disk: nothing was staged again"
            sh("sh", "-c", "echo 3 > /proc/sys/vm/drop_caches")
            assert hashlib.sha256((Path(attached.target) / "before").read_bytes()).hexdigest() == sha
    finally:
        pod.remove()
    ctl.delete(vol.volume_id)


def lv_stat(agent: AgentProcess, volume_id: str) -> Path:
    """/sys/block/dm-N/stat of the LV behind a volume (on the target's side)."""
    lv = Path(f"/dev/{agent_vg(agent)}/{volume_id.split('/', 1)[1]}").resolve()
    return Path(f"/sys/block/{lv.name}/stat")


def written(stat: Path) -> int:
    """Sectors written to a block device so far (/sys/block/X/stat field 7)."""
    return int(stat.read_text().split()[6])


def test_twenty_volumes_in_parallel_then_nothing_left(cluster):
    agent, ctl, node = cluster
    caps = [CAP if i % 2 else block_cap() for i in range(20)]
    took, began = {}, time.monotonic()
    vols = [ctl.create_retrying(f"pvc-par-{i}", size=64 * MiB, caps=[cap]) for i, cap in enumerate(caps)]
    uses = [Attached(ctl, node, vol, cap) for vol, cap in zip(vols, caps, strict=True)]
    took["create"], began = time.monotonic() - began, time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda use: use.__enter__(), uses))  # publish, stage, publish: none ABORTED
        took["attach"], began = time.monotonic() - began, time.monotonic()
        for use in uses:
            use.write(os.urandom(MiB))
        list(pool.map(lambda use: use.__exit__(None, None, None), uses))
        took["write+detach"], began = time.monotonic() - began, time.monotonic()
    for vol in vols:
        ctl.delete(vol.volume_id)
    took["delete"] = time.monotonic() - began
    print("20 volumes, seconds per phase:", {k: round(v, 1) for k, v in took.items()})
    assert_nothing_left(agent)
