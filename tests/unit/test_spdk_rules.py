"""Issue 12's storage rules on the SPDK backend (the fake here; a real nvmf_tgt with
SLUICE_SPDK_NVMF_TGT): fill marks on the lvstore's allocated clusters, and creates that
converge after the agent died between two of their steps."""

from __future__ import annotations

import time

import pytest

from nvme_target.fill import FillMarks
from nvme_target.model import Source
from sluice_common.errors import AlreadyExists, NoSpace
from tests.contract.backend_contract import MiB

# the fixtures of test_spdk_backend.py, shared (their names are re-used as parameters)
# ruff: noqa: F811
from tests.unit.test_spdk_backend import backend, backends, server  # noqa: F401


def lvols(server) -> list[str]:
    return sorted(row["name"] for row in server.target.bdev_lvol_get_lvols(lvs_name="sluice"))


def fill_to(server, percent: float) -> None:
    """Someone else's thick lvol takes `percent` of the lvstore's clusters (a thin
    volume's writes do the same)."""
    lvs = server.target.bdev_lvol_get_lvstores(lvs_name="sluice")[0]
    clusters = int(lvs["total_data_clusters"] * percent / 100) + 1
    size_mib = clusters * lvs["cluster_size"] // MiB
    if "filler" in lvols(server):
        server.target.bdev_lvol_resize(name="sluice/filler", size_in_mib=size_mib)
    else:
        server.target.bdev_lvol_create(lvol_name="filler", size_in_mib=size_mib, lvs_name="sluice",
                                       thin_provision=False)


# ----------------------------------------------------------------------- fill
def test_above_the_high_mark_nothing_new_is_created(backend, server):
    backend.fill_marks = FillMarks(high=50, critical=80)
    vol = backend.create_volume("pvc-f", 64 * MiB)
    snap = backend.create_snapshot("snap-f", vol.id)
    fill_to(server, 60)
    for create in (lambda: backend.create_volume("pvc-new", 64 * MiB),
                   lambda: backend.create_volume("pvc-clone", 64 * MiB, source=Source("snapshot", snap.id)),
                   lambda: backend.create_volume("pvc-copy", 64 * MiB, source=Source("volume", vol.id)),
                   lambda: backend.create_snapshot("snap-new", vol.id)):
        with pytest.raises(NoSpace, match=r"lvstore sluice data is 6\d\.\d% full.*high mark of 50%"):
            create()
    assert backend.create_volume("pvc-f", 64 * MiB) == vol  # a repeat is not new
    assert backend.create_snapshot("snap-f", vol.id) == snap
    assert lvols(server) == sorted([vol.id, snap.id, "filler"])
    assert backend.get_volume(vol.id).condition == ""
    health = backend.health()
    assert health.ready and any("high mark" in why for why in health.problems)


def test_above_the_critical_mark_volumes_are_abnormal_and_health_says_why(backend, server):
    backend.fill_marks = FillMarks(high=50, critical=80)
    vol = backend.create_volume("pvc-c", 64 * MiB)
    fill_to(server, 90)
    backend.health()  # looks at the fill now (volumes use a look at most a second old)
    condition = backend.get_volume(vol.id).condition
    assert "critical mark of 80%" in condition and "lvstore sluice" in condition
    assert [v.condition for v in backend.list_volumes()] == [condition]
    health = backend.health()
    assert health.ready and condition in health.problems
    server.target.bdev_lvol_delete(name="sluice/filler")  # room again
    deadline = time.monotonic() + 30
    while backend.get_volume(vol.id).condition and time.monotonic() < deadline:
        time.sleep(0.2)
    assert backend.get_volume(vol.id).condition == "" and backend.health().problems == ()
    assert backend.create_volume("pvc-c2", 64 * MiB).size_bytes == 64 * MiB


# ------------------------------------------------------------ crash convergence
class Crash(BaseException):
    """The agent died here (not an error any code path handles)."""


def crash_at(backend, step: str) -> None:
    def hook(name: str) -> None:
        if name == step:
            backend.fault_hook = None
            raise Crash(step)
    backend.fault_hook = hook


@pytest.mark.parametrize("step", ["volume recorded", "internal snapshot made", "clone made"])
def test_a_clone_of_a_volume_converges_after_a_crash_at_any_step(backend, server, step):
    src = backend.create_volume("pvc-src", 64 * MiB)
    source = Source("volume", src.id)
    crash_at(backend, step)
    with pytest.raises(Crash):
        backend.create_volume("pvc-cl", 128 * MiB, source=source)
    clone = backend.create_volume("pvc-cl", 128 * MiB, source=source)  # the retry finishes it
    assert clone.size_bytes == 128 * MiB and clone.source == source
    assert backend.create_volume("pvc-cl", 128 * MiB, source=source) == clone
    with pytest.raises(AlreadyExists):
        backend.create_volume("pvc-cl", 256 * MiB, source=source)
    assert lvols(server) == sorted([src.id, clone.id, "t-" + clone.id[2:]])
    backend.delete_volume(clone.id)
    backend.delete_volume(src.id)
    assert lvols(server) == [], "nothing orphaned"


@pytest.mark.parametrize("step", ["volume recorded", "clone made"])
def test_a_restore_from_a_snapshot_converges_after_a_crash(backend, server, step):
    src = backend.create_volume("pvc-s", 64 * MiB)
    snap = backend.create_snapshot("snap-s", src.id)
    crash_at(backend, step)
    with pytest.raises(Crash):
        backend.create_volume("pvc-r", 192 * MiB, source=Source("snapshot", snap.id))
    restored = backend.create_volume("pvc-r", 192 * MiB, source=Source("snapshot", snap.id))
    assert restored.size_bytes == 192 * MiB
    assert lvols(server) == sorted([src.id, snap.id, restored.id])


def test_a_snapshot_converges_after_a_crash(backend, server):
    vol = backend.create_volume("pvc-v", 64 * MiB)
    crash_at(backend, "snapshot recorded")
    with pytest.raises(Crash):
        backend.create_snapshot("snap-v", vol.id)
    snap = backend.create_snapshot("snap-v", vol.id)
    assert backend.list_snapshots() == [snap] and lvols(server) == sorted([vol.id, snap.id])
