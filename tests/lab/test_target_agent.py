"""The target agent as it runs in production (`python -m nvme_target`, a separate
process) on the real kernel: survives a crash plus a configfs wipe, and stays exact
under parallel calls."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from nvme_target import lvtags, naming

from tests.lab.processes import AgentProcess
from tests.lab.kernel import (
    NVMET, connect, disconnect, lvm, lvs_json, new_host_nqn, port_links, read_block, sluice_subsystems,
    wait_live, wipe_configfs, write_block,
)

pytestmark = pytest.mark.lab
MiB = 1 << 20


@pytest.fixture
def agent(thin_pool, tmp_path):
    vg, pool = thin_pool
    proc = AgentProcess(tmp_path, vg, pool, "/dev/vda")
    proc.start()
    yield proc
    for export in proc.client.list_exports():
        disconnect(export)
        proc.client.unexport_volume(export.volume_id)
    for vol in proc.client.list_volumes():
        proc.client.delete_volume(vol.id)
    for snap in proc.client.list_snapshots():
        proc.client.delete_snapshot(snap.id)
    proc.stop()
    proc.client.close()


def test_agent_reports_itself(agent):
    info = agent.client.info()
    assert info.target_id == "lab-target"
    assert info.topology == {"csi.sluice.dev/fabric": "default", "csi.sluice.dev/zone": "lab"}
    assert [(p.traddr, p.trsvcid) for p in info.portals] == [("127.0.0.1", "4420")], "lo resolved"
    assert agent.client.health().ready


def test_crash_and_configfs_wipe_restore_every_export(agent):
    host = new_host_nqn()
    client = agent.client
    vol = client.create_volume("pvc-restart", 64 * MiB)
    export = client.export_volume(vol.id, [host])
    ctrl, device = connect(export, host, extra="ctrl_loss_tmo=120,reconnect_delay=1")
    pattern = os.urandom(4 * MiB)
    write_block(device, pattern)

    agent.kill()
    wipe_configfs()  # what a reboot of the storage node does to nvmet
    assert sluice_subsystems() == []
    agent.start()    # restores the saved exports before it serves

    assert client.get_export(vol.id).hosts == {host}
    sub = NVMET / "subsystems" / export.subsystem_nqn
    assert [p.name for p in (sub / "allowed_hosts").iterdir()] == [host]
    wait_live(ctrl, 90)  # the initiator reconnects on its own within ctrl_loss_tmo
    assert hashlib.sha256(read_block(device, len(pattern))).digest() == hashlib.sha256(pattern).digest()


def test_parallel_creates_of_one_name_make_one_lv(agent, thin_pool):
    vg, pool = thin_pool
    client = agent.client
    with ThreadPoolExecutor(20) as pool_exec:
        volumes = list(pool_exec.map(lambda _: client.create_volume("pvc-race", 64 * MiB), range(20)))
    assert len({v.id for v in volumes}) == 1
    lvs = [lv["lv_name"] for lv in lvs_json(vg) if lv["lv_name"] != pool]
    assert lvs == [volumes[0].id]
    with ThreadPoolExecutor(20) as pool_exec:
        list(pool_exec.map(lambda _: client.delete_volume(volumes[0].id), range(20)))
    assert [lv["lv_name"] for lv in lvs_json(vg) if lv["lv_name"] != pool] == []


def test_parallel_create_export_delete_leaks_nothing(agent, thin_pool):
    vg, pool = thin_pool
    client = agent.client
    host = new_host_nqn()

    def provision(i: int) -> str:
        vol = client.create_volume(f"pvc-par-{i}", 32 * MiB)
        client.export_volume(vol.id, [host])
        return vol.id

    with ThreadPoolExecutor(10) as pool_exec:
        ids = list(pool_exec.map(provision, range(10)))
    assert len(sluice_subsystems()) == 10
    with ThreadPoolExecutor(10) as pool_exec:
        list(pool_exec.map(lambda vid: client.delete_volume(vid, unexport=True), ids + ids))
    assert [lv["lv_name"] for lv in lvs_json(vg) if lv["lv_name"] != pool] == []
    assert sluice_subsystems() == [] and port_links() == []
    assert not (NVMET / "hosts" / host).exists()


def test_an_export_that_cannot_be_restored_is_reported_and_skipped(agent, thin_pool):
    """A reboot (configfs wiped) with one exported LV removed behind the agent's back:
    the agent starts, says which export it could not restore, and serves the others."""
    vg, _ = thin_pool
    host = new_host_nqn()
    client = agent.client
    lost, kept = (client.create_volume(f"pvc-iso-{i}", 16 * MiB) for i in range(2))
    for vol in (lost, kept):
        client.export_volume(vol.id, [host])
    agent.kill()
    wipe_configfs()
    lvm("lvremove", "-q", "-y", f"{vg}/{lost.id}")
    agent.start()

    health = client.health()
    assert health.ready, health.problems
    assert [p for p in health.problems if lost.id in p], health.problems
    assert [x.volume_id for x in client.list_exports()] == [kept.id]
    export = client.get_export(kept.id)
    _, device = connect(export, host)
    pattern = os.urandom(MiB)
    write_block(device, pattern)
    assert read_block(device, MiB) == pattern
    disconnect(export)
    assert "export not restored" in agent.log.read_text()


def test_resync_shows_an_lv_made_behind_the_agents_back(thin_pool, tmp_path):
    """The agent answers from its index (its background re-read is an hour away here);
    an LV created with LVM directly is not in it until Resync, and is right after it."""
    vg, pool = thin_pool
    agent = AgentProcess(tmp_path, vg, pool, "/dev/vda", extra=["--fill-interval", "3600"])
    agent.start()
    try:
        assert agent.client.list_volumes() == []  # the index is built, and empty
        vol_id = naming.volume_id("pvc-behind")
        lvm("lvcreate", "-q", "-V", "64m", "-T", f"{vg}/{pool}", "-n", vol_id, "-kn",
            *(arg for tag in lvtags.volume_tags("pvc-behind", {}, None) for arg in ("--addtag", tag)))
        stale = agent.client.find_volume("pvc-behind")
        agent.client.resync()
        found = agent.client.find_volume("pvc-behind")
        listed = [v.name for v in agent.client.list_volumes()]
        print(f"LV made behind the agent's back: before Resync {'seen' if stale else 'not seen'}, after: {listed}")
        assert stale is None, "answered from the index, not from a fresh lvs"
        assert found is not None and found.id == vol_id and listed == ["pvc-behind"]
        agent.client.delete_volume(vol_id)
    finally:
        agent.stop()
        agent.client.close()
