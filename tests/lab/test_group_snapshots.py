"""Group snapshots on the real kernel (LVM thin + nvmet, NVMe/TCP hosts with multipath):
the set is crash-consistent while writers keep stamping blocks (single snapshots taken
one after another are not), the I/O pause of a 4-member group is measured, and the ANA
fence is lifted after a failure part-way and after a crash of the agent."""

from __future__ import annotations

import time

import pytest

from nvme_target import naming
from nvme_target.group_snapshot import FENCE_GROUP
from nvme_target.kernel_backend import KernelBackend
from nvme_target.model import Source
from sluice_common.errors import SluiceError
from tests.lab.kernel import NVMET, connect, disconnect, lvm, new_host_nqn, wait_for
from tests.lab.stamps import Stampers, captured, check, longest_stall

pytestmark = pytest.mark.lab
MiB = 1 << 20
SIZE = 64 * MiB
BLOCKS = SIZE // 4096


def attach(backend, names: list[str], host: str):
    vols = [backend.create_volume(n, SIZE) for n in names]
    exports = [backend.export_volume(v.id, [host]) for v in vols]
    devices = [connect(x, host)[1] for x in exports]
    return vols, exports, devices


def restored(backend, snapshots, label: str, blocks: int) -> list[set[int]]:
    """Clone each snapshot into a volume and read the stamps it holds."""
    holds = []
    for snap in snapshots:
        clone = backend.create_volume(f"{label}-{snap.source_volume_id}", SIZE, source=Source("snapshot", snap.id))
        holds.append(captured(backend.lvm.path(clone.id), blocks))
    return holds


def wait_writes(stampers: Stampers, more: int) -> None:
    target = stampers.writes() + more
    wait_for(lambda: stampers.writes() >= target, 120, f"{more} more writes on every member", interval=0.05)


def fence_state() -> list[str]:
    """Every fence ANA group left on a port, and every namespace still in one."""
    left = [str(g) for g in (NVMET / "ports").glob(f"*/ana_groups/{FENCE_GROUP}")]
    return left + [str(ns) for ns in (NVMET / "subsystems").glob("*/namespaces/*")
                   if (ns / "ana_grpid").read_text().strip() != "1"]


def test_group_is_crash_consistent_and_single_snapshots_are_not(kernel_backend):
    host = new_host_nqn()
    vols, exports, devices = attach(kernel_backend, ["shard-a", "shard-b"], host)
    stampers = Stampers(devices, BLOCKS)
    stampers.start()
    try:
        wait_writes(stampers, 20)
        group = kernel_backend.create_group_snapshot("ckpt-group", [v.id for v in vols])
        wait_writes(stampers, 20)
        singles = [kernel_backend.create_snapshot(f"ckpt-single-{v.name}", v.id) for v in vols]
        wait_writes(stampers, 5)
    finally:
        stampers.finish()
        for export in exports:
            disconnect(export)
    logs = [s.log for s in stampers.stampers]
    blocks = max(len(log) for log in logs)
    group_holds = restored(kernel_backend, group.snapshots, "restore-group", blocks)
    group_verdict = check(logs, group_holds)
    single_verdict = check(logs, restored(kernel_backend, singles, "restore-single", blocks))
    print(group_verdict.line("group snapshot"))
    print(single_verdict.line("single snapshots one after another"))
    assert all(group_verdict.newest), "each member's snapshot holds writes: the cut was mid-write"
    assert sum(map(len, logs)) > sum(map(len, group_holds)), "writes went on after the cut"
    assert group_verdict.broken == 0, group_verdict
    assert fence_state() == []


def test_pause_of_a_four_member_group_and_the_fence_always_lifts(kernel_backend, tmp_path):
    host = new_host_nqn()
    vols, exports, devices = attach(kernel_backend, [f"rank-{i}" for i in range(4)], host)
    ids = [v.id for v in vols]
    stampers = Stampers(devices, BLOCKS)
    stampers.start()
    try:
        wait_writes(stampers, 10)
        started = time.monotonic_ns()
        group = kernel_backend.create_group_snapshot("ckpt-4", ids)
        took = (time.monotonic_ns() - started) / 1e9
        wait_writes(stampers, 5)
        stalls = [longest_stall(s.log, started, started + int(took * 1e9)) for s in stampers.stampers]
        before = [longest_stall(s.log, 0, started) for s in stampers.stampers]
        print(f"group snapshot of 4 members: the call took {took:.2f} s; longest write wait per member "
              f"during it {[round(s, 2) for s in stalls]} s (before it: {[round(1000 * s) for s in before]} ms)")
        assert group.ready and len(group.snapshots) == 4

        # a failure part-way (member 3's snapshot id is taken by a stray LV): the fence
        # is lifted, the members made are deleted, writes go on
        stray = naming.snapshot_id(naming.member_snapshot_name("ckpt-fail", sorted(ids)[2]))
        lvm("lvcreate", "-q", "-V", "4m", "-T", f"{kernel_backend.lvm.vg}/{kernel_backend.lvm.pool}", "-n", stray)
        with pytest.raises(SluiceError):
            kernel_backend.create_group_snapshot("ckpt-fail", ids)
        assert fence_state() == []
        assert [s.id for s in kernel_backend.list_snapshots()] == sorted(s.id for s in group.snapshots)
        wait_writes(stampers, 5)
        lvm("lvremove", "-q", "-y", f"{kernel_backend.lvm.vg}/{stray}")

        # the agent dies with the fence up: writes are held until a restarted agent lifts it
        fence = kernel_backend.groups.ana.hold([naming.subsystem_nqn(v) for v in ids])
        fence.__enter__()  # and never leaves it: the process "died" here
        held_at = stampers.writes()
        time.sleep(3)
        assert stampers.writes() <= held_at + 1, "writes were held while fenced"
        restarted = KernelBackend(kernel_backend.lvm.vg, kernel_backend.lvm.pool, kernel_backend.portals(),
                                  tmp_path / "state", pvs=kernel_backend.lvm.devices)
        restarted.restore()
        assert fence_state() == []
        wait_writes(stampers, 5)
    finally:
        stampers.finish()
        for export in exports:
            disconnect(export)
    kernel_backend.delete_group_snapshot(group.id)
    assert kernel_backend.list_snapshots() == []
