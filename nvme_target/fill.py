"""How full a thin pool (LVM thin pool, SPDK lvstore) may get: one rule for every backend.

Thin provisioning loses data when the pool fills: writes to unallocated blocks have
nowhere to go. Two marks, on data and (LVM) metadata fill alike:

- above `high`: no new volume, clone or snapshot is created (RESOURCE_EXHAUSTED
  naming the pool and its fill), so existing volumes keep the room that is left;
- above `critical`: every volume of the pool is reported abnormal (VOLUME_CONDITION
  at the node and in ControllerGetVolume) and health says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sluice_common.errors import InvalidArgument

Level = Literal["ok", "high", "critical"]


@dataclass(frozen=True)
class FillMarks:
    high: float = 85.0      # percent: refuse new volumes, clones and snapshots above this
    critical: float = 95.0  # percent: report the pool's volumes abnormal above this

    def __post_init__(self) -> None:
        if not 0 < self.high <= self.critical <= 100:
            raise InvalidArgument(f"fill marks: need 0 < high ({self.high}) <= critical "
                                  f"({self.critical}) <= 100")


@dataclass(frozen=True)
class Fill:
    """A pool's fill as measured now, judged against the marks."""

    pool: str
    data_percent: float
    metadata_percent: float
    level: Level
    reason: str  # empty when level is "ok"


def assess(pool: str, data_percent: float, metadata_percent: float, marks: FillMarks) -> Fill:
    worst = max(data_percent, metadata_percent)
    what = "data" if data_percent >= metadata_percent else "metadata"
    level: Level = "critical" if worst >= marks.critical else "high" if worst >= marks.high else "ok"
    reason = ""
    if level != "ok":
        mark = marks.critical if level == "critical" else marks.high
        reason = (f"thin pool {pool} {what} is {worst:.1f}% full (data {data_percent:.1f}%, "
                  f"metadata {metadata_percent:.1f}%), past the {level} mark of {mark:g}%")
    return Fill(pool, data_percent, metadata_percent, level, reason)
