"""LvView: the create path's shortcut past `lvs` must never hide LVM's truth for long."""

from __future__ import annotations

from datetime import datetime, UTC

from nvme_target.lv_view import LvView
from nvme_target.lvm import LogicalVolume


def lv(name: str, size: int = 4 << 20) -> LogicalVolume:
    return LogicalVolume(name, size, (), "thin", "pool", "", 0.0, 0.0, 0,
                         datetime(2026, 1, 1, tzinfo=UTC), True, 4 << 20)


class CountingLvm:
    def __init__(self) -> None:
        self.lvs = {"pool": lv("pool", 1 << 30)}
        self.reports = 0

    def report(self):
        self.reports += 1
        return dict(self.lvs)


def test_current_reuses_a_young_view_and_fresh_always_asks():
    lvm = CountingLvm()
    view = LvView(lvm, ttl=60)
    view.current()
    view.current()
    assert lvm.reports == 1
    view.fresh()
    assert lvm.reports == 2


def test_old_views_are_read_again():
    lvm = CountingLvm()
    view = LvView(lvm, ttl=0)
    view.current()
    view.current()
    assert lvm.reports == 2


def test_own_mutations_update_the_view_without_a_read():
    lvm = CountingLvm()
    view = LvView(lvm, ttl=60)
    view.current()
    view.created(lv("v-1"))
    view.resized("v-1", 8 << 20)
    assert view.current()["v-1"].size == 8 << 20
    view.removed("v-1")
    assert "v-1" not in view.current()
    assert lvm.reports == 1


def test_a_read_that_raced_a_mutation_is_not_kept():
    lvm = CountingLvm()
    view = LvView(lvm, ttl=60)
    view.current()
    original = lvm.report

    def slow_report():
        result = original()          # the LVM state before the mutation below...
        view.created(lv("v-new"))    # ...which lands while this read is in flight
        return result

    lvm.report = slow_report
    view.fresh()
    lvm.report = original
    assert "v-new" in view.current(), "the stale read must not overwrite the newer view"


def test_invalidate_forces_a_read():
    lvm = CountingLvm()
    view = LvView(lvm, ttl=60)
    view.current()
    view.invalidate()
    view.current()
    assert lvm.reports == 2
