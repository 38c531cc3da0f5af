"""Host tests of the storage node's failure handling: pool fill rules (watch, fake
backend), the fence marker in the export state file, fault points, background loops."""

from __future__ import annotations

import threading
from datetime import datetime, UTC

import pytest

from nvme_target import faults, loops
from nvme_target.exports import ExportStore
from nvme_target.fill import FillMarks
from nvme_target.lvm import LogicalVolume
from nvme_target.pool_watch import PoolWatch
from nvme_target.settings import from_args
from sluice_common.errors import InvalidArgument, NoSpace
from tests.fakes.memory_backend import MemoryBackend
from tests.lab.kernel import wait_for

MiB = 1 << 20


def pool_lv(data: float, meta: float = 1.0) -> LogicalVolume:
    return LogicalVolume("pool", 1024 * MiB, (), "thin-pool", "", "", data, meta, 8 * MiB,
                         datetime(2026, 1, 1, tzinfo=UTC), True, 4 * MiB)


class FakeLvm:
    pool = "pool"

    def __init__(self, free: int) -> None:
        self.free = free
        self.extended: list[tuple[int, int]] = []

    def vg_free(self) -> int:
        return self.free

    def extend_pool(self, data: int = 0, meta: int = 0) -> None:
        self.extended.append((data, meta))


def test_pool_watch_levels_condition_and_change_events():
    changes = []
    watch = PoolWatch(FakeLvm(0), FillMarks(80, 90), on_change=lambda: changes.append(1))
    assert watch.observe(pool_lv(10)).level == "ok" and watch.condition == "" and changes == []
    assert watch.observe(pool_lv(85)).level == "high" and watch.condition == ""
    fill = watch.observe(pool_lv(20, meta=93))  # metadata counts as much as data
    assert fill.level == "critical" and "metadata" in watch.condition and "pool" in watch.condition
    watch.observe(pool_lv(20, meta=93))
    assert len(changes) == 2  # ok->high, high->critical; no event while the level holds


def test_auto_extend_grows_what_is_full_within_the_free_space():
    lvm = FakeLvm(free=100 * MiB)
    watch = PoolWatch(lvm, FillMarks(80, 90), auto_extend_percent=50)
    watch.observe(pool_lv(85))
    assert watch.auto_extend(pool_lv(85)) and lvm.extended == [(100 * MiB, 0)]  # capped by vg free
    lvm.free = 0
    assert not watch.auto_extend(pool_lv(85))
    assert not PoolWatch(FakeLvm(1 << 40), FillMarks(80, 90)).auto_extend(pool_lv(99)), "off by default"


def test_fake_backend_follows_the_fill_rules():
    backend = MemoryBackend()
    vol = backend.create_volume("pvc-a", 8 * MiB)
    stop = threading.Event()
    watch = backend.watch_volumes([vol.id], stop, tick=0.05)
    assert next(watch).condition == ""
    backend.set_fill(88)
    with pytest.raises(NoSpace, match="memory data is 88.0% full"):
        backend.create_volume("pvc-b", 8 * MiB)
    with pytest.raises(NoSpace):
        backend.create_snapshot("snap-a", vol.id)
    assert backend.capacity().available_bytes == 0
    backend.set_fill(96)
    assert "critical" in next(watch).condition  # the watch sends the condition change
    assert backend.health().problems and backend.list_volumes()[0].condition
    backend.set_fill(10)
    assert next(watch).condition == ""
    assert backend.expand_volume(vol.id, 16 * MiB).condition == ""
    stop.set()


def test_fence_marker_survives_a_restart_and_clears(tmp_path):
    store = ExportStore(tmp_path / "exports.json")
    store.put("v-1", frozenset({"a", "b"}), frozenset({"b"}))
    store.put("v-1", frozenset({"a"}), fence=frozenset({"b"}))
    again = ExportStore(tmp_path / "exports.json")  # what a restarted agent reads
    assert again.fencing("v-1") == {"b"} and again.load() == {"v-1": {"a"}}
    again.put("v-1", frozenset({"a"}))  # None keeps the marker
    assert again.fencing("v-1") == {"b"}
    again.put("v-1", frozenset({"a"}), fence=frozenset())
    assert ExportStore(tmp_path / "exports.json").fencing("v-1") == frozenset()


def test_fault_points_are_inert_unless_armed(tmp_path, monkeypatch):
    faults.point("clone.after-snapshot")  # no variable: nothing happens
    armed = tmp_path / "point"
    armed.write_text("some.other-point")
    monkeypatch.setenv(faults.ENV, str(armed))
    faults.point("clone.after-snapshot")  # another point is armed: nothing happens


def test_background_loop_survives_its_failures():
    calls = []

    def step():
        calls.append(1)
        raise RuntimeError("boom")

    stop = loops.every(0.01, step, "test-loop")
    wait_for(lambda: len(calls) >= 3, 10, "the loop to keep going")
    stop.set()


def test_fill_flags():
    s = from_args(["--fill-high", "70", "--fill-critical", "80", "--pool-auto-extend", "20", "--queue-when-full"])
    assert s.fill_marks == FillMarks(70, 80) and s.pool_auto_extend == 20 and not s.error_when_full
    with pytest.raises(InvalidArgument, match="fill marks"):
        from_args(["--fill-high", "90", "--fill-critical", "80"])
