"""The default backend: thin LVs in an LVM thin pool, exported by kernel nvmet.

One thin LV per volume and per snapshot (snapshots are read-only thin snapshots that
stay inactive; clones are writable thin snapshots of a snapshot or a volume, instant
and space-sharing). LV tags hold the CSI name, metadata and source, so LVM is the
source of truth. LVM mutations are serialized (check-then-create must be atomic so 20
parallel creates of one name make one LV, and the overcommit check cannot race).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, UTC
from pathlib import Path
from collections.abc import Collection, Iterable, Mapping, Sequence

import structlog

from nvme_target import faults, groups, loops, lvtags, naming, validate
from nvme_target.backend import Backend, only, page
from nvme_target.changes import ChangeFeed
from nvme_target.exports import ExportStore
from nvme_target.fill import FillMarks
from nvme_target.group_snapshot import AnaFence, LvmGroups
from nvme_target.lv_view import LvView
from nvme_target.lvm import LogicalVolume, Lvm
from nvme_target.model import Capacity, Export, GroupSnapshot, Health, Portal, QoS, Snapshot, Source, Volume
from nvme_target.nvmet import Nvmet
from nvme_target.nvmet_exports import NvmetExporter, port_id
from nvme_target.pool_watch import PoolWatch
from sluice_common.units import round_up
from sluice_common.errors import (
    AlreadyExists, BackendFailure, InUse, InvalidArgument, NoSpace, NotFound, OutOfRange, SluiceError, Unavailable,
)

log = structlog.get_logger(__name__)


class KernelBackend(Backend):
    def __init__(self, vg: str, pool: str, portals: tuple[Portal, ...], state_dir: Path,
                 overcommit_ratio: float = 4.0, marks: FillMarks | None = None,
                 nvmet: Nvmet | None = None, pvs: tuple[str, ...] = (), auto_extend_percent: float = 0.0,
                 error_when_full: bool = True, fill_interval: float = 10.0) -> None:
        if overcommit_ratio <= 0:
            raise InvalidArgument("overcommit_ratio must be positive")
        self.lvm = Lvm(vg, pool, pvs)
        self.view = LvView(self.lvm)
        self.nvmet = nvmet or Nvmet()
        self.exporter = NvmetExporter(self.nvmet, ExportStore(state_dir / "exports.json"),
                                      portals, self.lvm.path)
        self.overcommit_ratio = overcommit_ratio
        self._lvm_lock = threading.Lock()
        self.changes = ChangeFeed()
        self.pool_watch = PoolWatch(self.lvm, marks or FillMarks(), auto_extend_percent, on_change=self.changes.bump)
        self.error_when_full = error_when_full
        self.fill_interval = fill_interval
        self._loops: list[threading.Event] = []
        self._refresh_error = ""
        self._refresh_lock = threading.Lock()  # one measurement (and one pool extension) at a time
        fence = AnaFence(self.nvmet, lambda: [port_id(p) for p in self.exporter.portals])
        self.groups = LvmGroups(self.lvm, self.view, self._lvm_lock, fence)

    # ----------------------------------------------------------------- volumes
    def create_volume(self, name: str, size_bytes: int, metadata: Mapping[str, str] | None = None,
                      source: Source | None = None) -> Volume:
        validate.name(name)
        validate.size(size_bytes)
        meta = validate.metadata(metadata)
        vol_id = naming.volume_id(name)
        with self._lvm_lock:
            lvs = self.view.current()
            pool = self._pool(lvs)
            size = round_up(size_bytes, pool.extent_size)
            if source is not None:
                lvs = self.view.fresh()  # clones are rare: check the source against LVM itself
            if lvtags.incomplete(lvs.get(vol_id)):
                self._drop_incomplete(lvs.pop(vol_id))
            if vol_id in lvs:
                return self._same_volume(lvs[vol_id], name, size, meta, source)
            origin = self._source_lv(lvs, source) if source else None
            if origin is not None and size < origin.size:
                raise OutOfRange(f"size_bytes {size} is smaller than the source ({origin.size} bytes)")
            self._check_fill(pool)
            self._check_room(lvs, pool, size)
            tags = lvtags.volume_tags(name, meta, source)
            if origin is None:
                try:
                    self._create_thin(vol_id, size, tags, pool)
                except BackendFailure:
                    existing = self.view.fresh().get(vol_id)  # made behind the view's back?
                    if existing is None:
                        raise
                    return self._same_volume(existing, name, size, meta, source)
            else:
                self._clone(origin, vol_id, size, tags)
        log.info("volume created", volume_id=vol_id, size_bytes=size, source=source)
        return Volume(vol_id, name, size, meta, source)

    def get_volume(self, volume_id: str) -> Volume:
        validate.volume_id(volume_id)
        vol = self._judged(lvtags.to_volume(self.view.current().get(volume_id)))
        if vol is None:
            raise NotFound(f"volume {volume_id} not found")
        return vol

    def find_volume(self, name: str) -> Volume | None:
        validate.name(name)
        vol = self._judged(lvtags.to_volume(self.view.current().get(naming.volume_id(name))))
        return vol if vol is not None and vol.name == name else None

    def list_volumes(self, start_after: str = "", limit: int = 0) -> list[Volume]:
        lvs = self.view.current()
        ids = sorted(name for name, lv in lvs.items() if lvtags.kind(lv) == "volume" and not lvtags.incomplete(lv))
        return [self._judged(lvtags.to_volume(lvs[i])) for i in page(ids, str, start_after, limit)]

    def delete_volume(self, volume_id: str, unexport: bool = False) -> None:
        try:
            validate.volume_id(volume_id)
        except NotFound:
            return
        if self.exporter.is_exported(volume_id):
            if not unexport:
                raise InUse(f"volume {volume_id} is exported; unexport it first")
            self.exporter.unexport(volume_id)
            faults.point("delete.after-unexport")
        with self._lvm_lock:
            if lvtags.kind(self.view.fresh().get(volume_id)) != "volume":  # incomplete clones too
                return
            self.lvm.remove(volume_id)
            self.view.removed(volume_id)
        log.info("volume deleted", volume_id=volume_id)

    def expand_volume(self, volume_id: str, size_bytes: int) -> Volume:
        validate.volume_id(volume_id)
        validate.size(size_bytes)
        with self._lvm_lock:
            lvs = self.view.fresh()
            current = lvtags.to_volume(lvs.get(volume_id))
            if current is None:
                raise NotFound(f"volume {volume_id} not found")
            pool = self._pool(lvs)
            size = round_up(size_bytes, pool.extent_size)
            if size < current.size_bytes:
                raise InvalidArgument(f"size_bytes {size_bytes} is smaller than the volume "
                                      f"({current.size_bytes} bytes): volumes only grow")
            if size > current.size_bytes:
                self._check_room(lvs, pool, size - current.size_bytes)
                self.lvm.extend(volume_id, size)
                self.view.resized(volume_id, size)
                faults.point("expand.after-extend")
        self.exporter.revalidate(volume_id)  # again on a retry: a crash may have skipped it
        log.info("volume expanded", volume_id=volume_id, size_bytes=size)
        return replace(current, size_bytes=size)

    def set_qos(self, volume_id: str, qos: QoS) -> Volume:
        """The kernel target has no per-namespace limits: the limits live in an LV tag
        (the source of truth nodes watch) and the nodes enforce them with io.max."""
        validate.volume_id(volume_id)
        with self._lvm_lock:
            lv = self.view.fresh().get(volume_id)
            current = lvtags.to_volume(lv)
            if lv is None or current is None:
                raise NotFound(f"volume {volume_id} not found")
            if current.qos != qos:
                old, new = lvtags.qos_tags(lv), lvtags.qos_tag(qos)
                self.lvm.retag(volume_id, old, [new])
                self.view.retagged(volume_id, tuple(t for t in lv.tags if t not in old) + (new,))
                log.info("volume limits set", volume_id=volume_id, **qos.as_params())
        self.changes.bump()
        return replace(current, qos=qos)

    # --------------------------------------------------------------- snapshots
    def create_snapshot(self, name: str, source_volume_id: str) -> Snapshot:
        validate.name(name)
        snap_id = naming.snapshot_id(name)
        with self._lvm_lock:
            lvs = self.view.fresh()
            if snap_id in lvs:
                existing = lvtags.to_snapshot(lvs[snap_id])
                if existing is None or existing.name != name or existing.source_volume_id != source_volume_id:
                    raise AlreadyExists(f"snapshot {name!r} already exists for another source")
                return existing
            validate.volume_id(source_volume_id)
            if lvtags.to_volume(lvs.get(source_volume_id)) is None:
                raise NotFound(f"source volume {source_volume_id} not found")
            self._check_fill(self._pool(lvs))
            self.lvm.snapshot(source_volume_id, snap_id, lvtags.snapshot_tags(name, source_volume_id),
                              writable=False)
            self.view.invalidate()
            faults.point("snapshot.after-lvcreate")
            created = lvtags.to_snapshot(self.view.fresh()[snap_id])
        log.info("snapshot created", snapshot_id=snap_id, source_volume_id=source_volume_id)
        return created  # type: ignore[return-value]

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        validate.snapshot_id(snapshot_id)
        snap = lvtags.to_snapshot(self.view.current().get(snapshot_id))
        if snap is None:
            raise NotFound(f"snapshot {snapshot_id} not found")
        return snap

    def find_snapshot(self, name: str) -> Snapshot | None:
        validate.name(name)
        snap = lvtags.to_snapshot(self.view.current().get(naming.snapshot_id(name)))
        return snap if snap is not None and snap.name == name else None

    def list_snapshots(self, source_volume_id: str | None = None) -> list[Snapshot]:
        snaps = (s for s in map(lvtags.to_snapshot, self.view.current().values()) if s)
        return sorted((s for s in snaps if source_volume_id in (None, s.source_volume_id)),
                      key=lambda s: s.id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Thin clones share blocks through the pool, not through their origin: deleting a
        snapshot never takes data from a volume cloned from it, so nothing depends on it."""
        try:
            validate.snapshot_id(snapshot_id)
        except NotFound:
            return
        with self._lvm_lock:
            if lvtags.to_snapshot(self.view.fresh().get(snapshot_id)) is None:
                return
            self.lvm.remove(snapshot_id)
            self.view.removed(snapshot_id)
        log.info("snapshot deleted", snapshot_id=snapshot_id)

    # --------------------------------------------------------- group snapshots
    def create_group_snapshot(self, name: str, source_volume_ids: Sequence[str]) -> GroupSnapshot:
        return groups.create(self.groups, name, source_volume_ids)  # ANA fence: group_snapshot.py

    def get_group_snapshot(self, group_id: str) -> GroupSnapshot:
        return groups.get(self.groups, group_id)

    def delete_group_snapshot(self, group_id: str) -> None:
        groups.delete(self.groups, group_id)

    # ---------------------------------------------------------------- capacity
    def capacity(self) -> Capacity:
        lvs = self.view.current()
        pool = self._pool(lvs)
        provisioned = _provisioned(lvs)
        limit = int(pool.size * self.overcommit_ratio)
        full = self.pool_watch.fill.level != "ok"
        return Capacity(
            total_bytes=pool.size, used_bytes=int(pool.size * pool.data_percent / 100),
            provisioned_bytes=provisioned, available_bytes=0 if full else max(0, limit - provisioned),
            data_percent=pool.data_percent, metadata_percent=pool.metadata_percent,
            overcommit_ratio=self.overcommit_ratio, allocation_unit_bytes=pool.extent_size,
        )

    # ----------------------------------------------------------------- exports
    def portals(self) -> tuple[Portal, ...]:
        return self.exporter.portals

    def export_volume(self, volume_id: str, hosts: Iterable[str] = ()) -> Export:
        self._ready_for_export(volume_id)
        return self.exporter.export(volume_id, hosts)

    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False) -> Export:
        self._ready_for_export(volume_id)
        return self.exporter.add_host(volume_id, host_nqn, readonly)

    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        try:
            validate.volume_id(volume_id)
        except NotFound:
            return None
        return self.exporter.remove_host(volume_id, host_nqn)

    def unexport_volume(self, volume_id: str) -> None:
        try:
            validate.volume_id(volume_id)
        except NotFound:
            return
        self.exporter.unexport(volume_id)

    def get_export(self, volume_id: str) -> Export | None:
        return self.exporter.get(volume_id)

    def list_exports(self, volume_ids: Collection[str] | None = None) -> list[Export]:
        return only(self.exporter.list(), volume_ids)

    # --------------------------------------------------------------- lifecycle
    def restore(self) -> None:
        """At start: remove crash debris (incomplete clones, half-made exports), then
        re-apply the saved exports, then start watching the pool's fill."""
        lvs = self.view.fresh()
        if self.error_when_full and self._pool(lvs).when_full != "error":
            self.lvm.error_when_full()
        for lv in [lv for lv in lvs.values() if lvtags.incomplete(lv)]:
            self._drop_incomplete(lvs.pop(lv.name))
        for lv in lvs.values():
            if lvtags.kind(lv) == "volume" and not lv.active and lv.name in self.exporter.store.load():
                self.lvm.activate(lv.name)
        self.exporter.restore(lambda vol_id: lvtags.to_volume(lvs.get(vol_id)) is not None)
        self.groups.ana.lift_leftovers(map(naming.subsystem_nqn, self.exporter.store.load()))  # left by a crash
        if self.fill_interval > 0 and not self._loops:
            self._loops.append(loops.every(self.fill_interval, self.refresh_fill, "pool-fill"))

    def refresh_fill(self) -> None:
        """Re-read LVM: re-syncs the index with anything changed behind the agent's back
        and measures the pool's fill again (growing the pool when that is enabled)."""
        with self._refresh_lock:
            try:
                pool = self._pool(self.view.fresh())
            except SluiceError as exc:
                self._refresh_error = f"cannot read the volume group: {exc}"
                raise
            self._refresh_error = ""
            if self.pool_watch.auto_extend(pool):
                self.view.invalidate()
                self._pool(self.view.fresh())

    def close(self) -> None:
        for stop in self._loops:
            stop.set()

    def health(self) -> Health:
        problems: list[str] = []
        try:
            self._pool(self.view.current())
        except SluiceError as exc:
            problems.append(str(exc))
        if self._refresh_error:
            problems.append(self._refresh_error)
        if not self.nvmet.available():
            problems.append(f"nvmet configfs missing at {self.nvmet.root}")
        if not Path("/sys/module/nvmet_tcp").is_dir():
            problems.append("kernel module nvmet_tcp is not loaded")
        # reported, not fatal: a full pool must still serve deletes, and an export that
        # could not be restored must not take the others down
        reported = [self.pool_watch.condition] if self.pool_watch.condition else []
        reported += sorted(self.exporter.problems.values())
        return Health(ready=not problems, problems=tuple(problems + reported))

    # ---------------------------------------------------------------- internals
    def _pool(self, lvs: dict[str, LogicalVolume]) -> LogicalVolume:
        pool = lvs.get(self.lvm.pool)
        if pool is None or pool.segtype != "thin-pool":
            raise Unavailable(f"thin pool {self.lvm.vg}/{self.lvm.pool} not found")
        self.pool_watch.observe(pool)
        return pool

    def _judged(self, vol: Volume | None) -> Volume | None:
        """The volume with the pool's condition (every volume shares the pool's fate)."""
        condition = self.pool_watch.condition
        return replace(vol, condition=condition) if vol is not None and condition else vol

    def _check_fill(self, pool: LogicalVolume) -> None:
        """No new volume, clone or snapshot past the high mark: the room left is for the
        volumes that exist."""
        fill = self.pool_watch.observe(pool)
        if fill.level != "ok":
            raise NoSpace(f"refusing to create: {fill.reason}")

    def _same_volume(self, lv: LogicalVolume, name: str, size: int, meta: dict,
                     source: Source | None) -> Volume:
        existing = lvtags.to_volume(lv)
        if existing is None or existing.name != name:
            raise AlreadyExists(f"an LV named {lv.name} exists and is not the volume {name!r}")
        if (existing.size_bytes, dict(existing.metadata), existing.source) != (size, meta, source):
            raise AlreadyExists(f"volume {name!r} already exists with a different size, "
                                f"metadata or source")
        return existing

    def _source_lv(self, lvs: dict[str, LogicalVolume], source: Source) -> LogicalVolume:
        check = validate.snapshot_id if source.kind == "snapshot" else validate.volume_id
        check(source.id)
        lv = lvs.get(source.id)
        if lv is None or lvtags.kind(lv) != source.kind:
            raise NotFound(f"source {source.kind} {source.id} not found")
        return lv

    def _create_thin(self, vol_id: str, size: int, tags: list[str], pool: LogicalVolume) -> None:
        try:
            self.lvm.create_thin(vol_id, size, tags)
        except BackendFailure:
            self.view.invalidate()
            raise
        faults.point("create.after-lvcreate")
        self.view.created(LogicalVolume(
            name=vol_id, size=size, tags=tuple(tags), segtype="thin", pool=self.lvm.pool, origin="",
            data_percent=0.0, metadata_percent=0.0, metadata_size=0,
            created_at=datetime.now(UTC), active=True, extent_size=pool.extent_size))

    def _clone(self, origin: LogicalVolume, vol_id: str, size: int, tags: list[str]) -> None:
        """A writable thin snapshot, grown to `size`. Until it is grown it carries the
        incomplete tag: a crash in between leaves an LV that no call reports as a
        volume and that the next create of that name (or the agent's start) removes."""
        grow = size > origin.size
        try:
            self.lvm.snapshot(origin.name, vol_id, tags + ([lvtags.INCOMPLETE] if grow else []), writable=True)
            faults.point("clone.after-snapshot")
            if grow:
                try:
                    self.lvm.extend(vol_id, size)
                    faults.point("clone.after-extend")
                    self.lvm.retag(vol_id, [lvtags.INCOMPLETE], [])
                except SluiceError:
                    self.lvm.remove(vol_id)  # nothing half-created
                    raise
        finally:
            # after the change, not before: a concurrent reader (the pool watch, a list) that read
            # LVM while the clone was being made would otherwise cache a view without it
            self.view.invalidate()

    def _drop_incomplete(self, lv: LogicalVolume) -> None:
        """Remove a clone a crash left half-made (see _clone)."""
        log.warning("removing a clone left incomplete by a crash", lv=lv.name)
        self.lvm.remove(lv.name)
        self.view.removed(lv.name)

    def _check_room(self, lvs: dict[str, LogicalVolume], pool: LogicalVolume, extra: int) -> None:
        limit = int(pool.size * self.overcommit_ratio)
        provisioned = _provisioned(lvs)
        if provisioned + extra > limit:
            raise NoSpace(f"{extra} more bytes exceed the thin pool's overcommit limit "
                          f"({provisioned} of {limit} bytes provisioned, ratio {self.overcommit_ratio})")

    def _ready_for_export(self, volume_id: str) -> None:
        validate.volume_id(volume_id)
        if Path(self.lvm.path(volume_id)).exists():
            return  # the device node of an active LV with a volume id: nothing to check
        lv = self.view.fresh().get(volume_id)
        if lv is None or lvtags.kind(lv) != "volume":
            raise NotFound(f"volume {volume_id} not found")
        if not lv.active:
            self.lvm.activate(volume_id)


def _provisioned(lvs: dict[str, LogicalVolume]) -> int:
    return sum(lv.size for lv in lvs.values() if lvtags.kind(lv) == "volume")
