"""LVM thin pool adapter: the only code that runs lvm commands.

Reads come from `lvs --reportformat json` (never scraped text); writes are single
lvcreate/lvextend/lvremove/lvchange calls. LVM itself is the source of truth: Sluice's
bookkeeping (CSI name, metadata, source) lives in LV tags.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, UTC
from collections.abc import Sequence

from sluice_common import runner
from sluice_common.errors import Unavailable

LV_FIELDS = ("lv_name,lv_size,lv_tags,segtype,pool_lv,origin,data_percent,metadata_percent,"
             "lv_metadata_size,lv_time,lv_active,vg_extent_size,lv_when_full")
UNITS = ("--units", "b", "--nosuffix")


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    size: int
    tags: tuple[str, ...]
    segtype: str
    pool: str
    origin: str
    data_percent: float
    metadata_percent: float
    metadata_size: int
    created_at: datetime
    active: bool
    extent_size: int
    when_full: str = ""  # thin pools: "error" or "queue" (what a write sees when the pool is full)


def _num(value: str) -> float:
    return float(value) if value not in ("", None) else 0.0


def _time(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S %z")
    except (TypeError, ValueError):
        return datetime.fromtimestamp(0, UTC)


def _record(row: dict) -> LogicalVolume:
    return LogicalVolume(
        name=row["lv_name"], size=int(_num(row["lv_size"])),
        tags=tuple(t for t in row.get("lv_tags", "").split(",") if t),
        segtype=row.get("segtype", ""), pool=row.get("pool_lv", ""), origin=row.get("origin", ""),
        data_percent=_num(row.get("data_percent", "")),
        metadata_percent=_num(row.get("metadata_percent", "")),
        metadata_size=int(_num(row.get("lv_metadata_size", ""))),
        created_at=_time(row.get("lv_time", "")),
        active=row.get("lv_active", "") == "active",
        extent_size=int(_num(row.get("vg_extent_size", ""))),
        when_full=row.get("lv_when_full", ""),
    )


class Lvm:
    """One volume group and one thin pool in it.

    `devices` (the VG's PVs) limits what every LVM command scans. A storage node that
    also attaches NVMe/TCP volumes (hyperconverged, or the lab) must set it: a scan that
    touches a namespace whose controller is reconnecting blocks until ctrl_loss_tmo.
    """

    def __init__(self, vg: str, pool: str, devices: Sequence[str] = ()) -> None:
        self.vg = vg
        self.pool = pool
        self.devices = tuple(devices)

    def _lvm(self, command: str, *args: str) -> list[str]:
        scope = ["--devices", ",".join(self.devices)] if self.devices else []
        return [command, *scope, *args]

    def path(self, lv: str) -> str:
        return f"/dev/{self.vg}/{lv}"

    def report(self) -> dict[str, LogicalVolume]:
        """Every LV of the volume group, by name. Unavailable when the VG is missing."""
        result = runner.run(self._lvm("lvs", "--reportformat", "json", *UNITS, "-o", LV_FIELDS, self.vg),
                            check=False)
        if result.returncode != 0:
            raise Unavailable(f"volume group {self.vg} is not available", exit_code=result.returncode)
        rows = json.loads(result.stdout)["report"][0]["lv"]
        return {row["lv_name"]: _record(row) for row in rows}

    def create_thin(self, name: str, size: int, tags: Sequence[str]) -> None:
        runner.run(self._lvm("lvcreate", "-q", "-V", f"{size}b", "-T", f"{self.vg}/{self.pool}",
                             "-n", name, "-kn", *_addtags(tags)))

    def snapshot(self, origin: str, name: str, tags: Sequence[str], *, writable: bool) -> None:
        """A thin snapshot of `origin`: read-only and inactive (a snapshot), or writable
        and active (a clone)."""
        mode = ["-prw", "-kn", "-ay"] if writable else ["-pr", "-ky", "-an"]
        runner.run(self._lvm("lvcreate", "-q", "-s", f"{self.vg}/{origin}", "-n", name, *mode,
                             *_addtags(tags)))

    def extend(self, name: str, size: int) -> None:
        runner.run(self._lvm("lvextend", "-q", "-L", f"{size}b", f"{self.vg}/{name}"))

    def retag(self, name: str, remove: Sequence[str], add: Sequence[str]) -> None:
        deltags = [arg for tag in remove for arg in ("--deltag", tag)]
        runner.run(self._lvm("lvchange", "-q", *deltags, *_addtags(add), f"{self.vg}/{name}"))

    def remove(self, name: str) -> None:
        runner.run(self._lvm("lvremove", "-q", "-y", f"{self.vg}/{name}"))

    def error_when_full(self) -> None:
        """A full pool fails writes to unallocated blocks at once (instead of queueing
        them for dm-thin's no_space_timeout, 60 s, which looks like a hang)."""
        runner.run(self._lvm("lvchange", "-q", "--errorwhenfull", "y", f"{self.vg}/{self.pool}"))

    def vg_free(self) -> int:
        result = runner.run(self._lvm("vgs", "--noheadings", *UNITS, "-o", "vg_free", self.vg))
        return int(_num(result.stdout.strip()))

    def extend_pool(self, data_bytes: int = 0, metadata_bytes: int = 0) -> None:
        """Grow the pool's data (or metadata) by these many bytes (LVM rounds to extents)."""
        if data_bytes:
            runner.run(self._lvm("lvextend", "-q", "-L", f"+{data_bytes}b", f"{self.vg}/{self.pool}"))
        if metadata_bytes:
            runner.run(self._lvm("lvextend", "-q", "--poolmetadatasize", f"+{metadata_bytes}b",
                                 f"{self.vg}/{self.pool}"))

    def activate(self, name: str) -> None:
        runner.run(self._lvm("lvchange", "-q", "-ay", "-K", f"{self.vg}/{name}"))


def _addtags(tags: Sequence[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        out += ["--addtag", tag]
    return out
