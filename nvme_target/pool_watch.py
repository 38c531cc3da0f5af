"""The kernel backend's thin pool, watched: data and metadata fill judged against the
fill marks (nvme_target.fill), optionally grown while the volume group has free
extents. The fill is re-measured by every call that reads the pool and by a background
loop (fill changes with I/O, not only with Sluice's own calls)."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from nvme_target.fill import Fill, FillMarks, assess
from nvme_target.lvm import LogicalVolume, Lvm

log = structlog.get_logger(__name__)


class PoolWatch:
    def __init__(self, lvm: Lvm, marks: FillMarks, auto_extend_percent: float = 0.0,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.lvm = lvm
        self.marks = marks
        self.auto_extend_percent = auto_extend_percent
        self.on_change = on_change
        self.fill: Fill = assess(lvm.pool, 0.0, 0.0, marks)

    @property
    def condition(self) -> str:
        """What every volume of the pool reports: empty unless the pool is past critical."""
        return self.fill.reason if self.fill.level == "critical" else ""

    def observe(self, pool: LogicalVolume) -> Fill:
        fill = assess(self.lvm.pool, pool.data_percent, pool.metadata_percent, self.marks)
        old, self.fill = self.fill, fill
        if fill.level != old.level:
            (log.info if fill.level == "ok" else log.warning)(
                "thin pool fill level changed", pool=self.lvm.pool, level=fill.level, was=old.level,
                data_percent=fill.data_percent, metadata_percent=fill.metadata_percent)
            self.on_change()
        return fill

    def auto_extend(self, pool: LogicalVolume) -> bool:
        """Grow what is past the high mark by auto_extend_percent of its size, within the
        volume group's free space. True when the pool was extended."""
        if not self.auto_extend_percent or self.fill.level == "ok":
            return False
        free = self.lvm.vg_free()
        share = self.auto_extend_percent / 100
        data = min(free, int(pool.size * share)) if self.fill.data_percent >= self.marks.high else 0
        meta = (min(free - data, max(int(pool.metadata_size * share), pool.extent_size))
                if self.fill.metadata_percent >= self.marks.high else 0)
        data, meta = (x if x >= pool.extent_size else 0 for x in (data, meta))
        if not data and not meta:
            log.warning("thin pool is past its high mark and the volume group has no room to grow it",
                        pool=self.lvm.pool, vg_free_bytes=free)
            return False
        self.lvm.extend_pool(data, meta)
        log.warning("thin pool extended", pool=self.lvm.pool, data_bytes=data, metadata_bytes=meta)
        return True
