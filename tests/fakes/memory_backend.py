"""An in-memory Backend for fast unit tests, with the kernel backend's semantics.

It is held to the same contract suite (tests/contract) that KernelBackend passes on
the real kernel in the lab, which is what keeps it honest.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from datetime import datetime, UTC
from collections.abc import Collection, Iterable, Mapping, Sequence

from nvme_target import dhchap, groups, naming, validate
from nvme_target.dhchap import HostCredentials
from nvme_target.backend import Backend, only, page
from nvme_target.changes import ChangeFeed
from nvme_target.fill import Fill, FillMarks, assess
from nvme_target.model import Capacity, Export, GroupSnapshot, Health, Portal, QoS, Snapshot, Source, Volume
from nvme_target.pointers import NamePointers
from sluice_common.units import round_up
from sluice_common.errors import AlreadyExists, InUse, InvalidArgument, NoSpace, NotFound, OutOfRange

EXTENT = 4 << 20


class MemoryBackend(Backend):
    def __init__(self, pool_bytes: int = 4 << 30, overcommit_ratio: float = 2.0,
                 portals: tuple[Portal, ...] = (Portal("127.0.0.1", "4420"),)) -> None:
        self.pool_bytes = pool_bytes
        self.overcommit_ratio = overcommit_ratio
        self._portals = portals
        self.volumes: dict[str, Volume] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.exports: dict[str, frozenset[str]] = {}
        self.group_sizes: dict[str, int] = {}  # member snapshot id -> its group's size
        self.readonly: dict[str, frozenset[str]] = {}
        self.credentials: dict[tuple[str, str], HostCredentials] = {}  # (volume, host) -> DH-HMAC-CHAP keys
        self._lock = threading.RLock()
        self.changes = ChangeFeed()
        self.pointers = NamePointers(None)
        self.marks = FillMarks()
        self.fill: Fill = assess("memory", 0.0, 0.0, self.marks)

    def set_fill(self, data_percent: float, metadata_percent: float = 0.0) -> None:
        """Test hook: the pool's fill as I/O would change it (the kernel backend's rules:
        no creates past the high mark, every volume abnormal past critical)."""
        old, self.fill = self.fill, assess("memory", data_percent, metadata_percent, self.marks)
        if old.level != self.fill.level:
            self.changes.bump()

    def _judged(self, vol: Volume) -> Volume:
        return replace(vol, condition=self.fill.reason) if self.fill.level == "critical" else vol

    # ----------------------------------------------------------------- volumes
    def create_volume(self, name: str, size_bytes: int, metadata: Mapping[str, str] | None = None,
                      source: Source | None = None) -> Volume:
        validate.name(name)
        validate.size(size_bytes)
        meta = validate.metadata(metadata)
        vol_id = naming.volume_id(name)
        size = round_up(size_bytes, EXTENT)
        with self._lock:
            if vol_id in self.volumes:
                have = self.volumes[vol_id]
                if (have.size_bytes, dict(have.metadata), have.source) != (size, meta, source):
                    raise AlreadyExists(f"volume {name!r} already exists with a different size, "
                                        "metadata or source")
                return have
            if source is not None:
                origin_size = self._source_size(source)
                if size < origin_size:
                    raise OutOfRange(f"size_bytes {size} is smaller than the source ({origin_size} bytes)")
            self._check_fill()
            self._check_room(size)
            vol = Volume(vol_id, name, size, meta, source)
            self.volumes[vol_id] = vol
            return vol

    def get_volume(self, volume_id: str) -> Volume:
        validate.volume_id(volume_id)
        try:
            return self._judged(self.volumes[volume_id])
        except KeyError:
            raise NotFound(f"volume {volume_id} not found") from None

    def find_volume(self, name: str) -> Volume | None:
        validate.name(name)
        vol = self.volumes.get(naming.volume_id(name))
        return self._judged(vol) if vol is not None else None

    def list_volumes(self, start_after: str = "", limit: int = 0) -> list[Volume]:
        vols = page(sorted(self.volumes.values(), key=lambda v: v.id), lambda v: v.id, start_after, limit)
        return [self._judged(v) for v in vols]

    def delete_volume(self, volume_id: str, unexport: bool = False) -> None:
        with self._lock:
            if volume_id in self.exports:
                if not unexport:
                    raise InUse(f"volume {volume_id} is exported; unexport it first")
                del self.exports[volume_id]
                self.readonly.pop(volume_id, None)
            self.volumes.pop(volume_id, None)

    def expand_volume(self, volume_id: str, size_bytes: int) -> Volume:
        validate.size(size_bytes)
        with self._lock:
            self.get_volume(volume_id)  # NotFound
            vol = self.volumes[volume_id]
            size = round_up(size_bytes, EXTENT)
            if size < vol.size_bytes:
                raise InvalidArgument(f"size_bytes {size_bytes} is smaller than the volume "
                                      f"({vol.size_bytes} bytes): volumes only grow")
            if size > vol.size_bytes:
                self._check_room(size - vol.size_bytes)
                vol = replace(vol, size_bytes=size)
                self.volumes[volume_id] = vol
            return self._judged(vol)

    def set_qos(self, volume_id: str, qos: QoS) -> Volume:
        validate.volume_id(volume_id)
        with self._lock:
            if volume_id not in self.volumes:
                raise NotFound(f"volume {volume_id} not found")
            vol = self.volumes[volume_id] = replace(self.volumes[volume_id], qos=qos)
        self.changes.bump()
        return self._judged(vol)

    # --------------------------------------------------------------- snapshots
    def create_snapshot(self, name: str, source_volume_id: str) -> Snapshot:
        validate.name(name)
        snap_id = naming.snapshot_id(name)
        with self._lock:
            if snap_id in self.snapshots:
                have = self.snapshots[snap_id]
                if have.source_volume_id != source_volume_id:
                    raise AlreadyExists(f"snapshot {name!r} already exists for another source")
                return have
            validate.volume_id(source_volume_id)
            if source_volume_id not in self.volumes:
                raise NotFound(f"source volume {source_volume_id} not found")
            self._check_fill()
            now = datetime.now(UTC).replace(microsecond=0)
            snap = Snapshot(snap_id, name, source_volume_id, self.volumes[source_volume_id].size_bytes, now)
            self.snapshots[snap_id] = snap
            return snap

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        validate.snapshot_id(snapshot_id)
        try:
            return self.snapshots[snapshot_id]
        except KeyError:
            raise NotFound(f"snapshot {snapshot_id} not found") from None

    def find_snapshot(self, name: str) -> Snapshot | None:
        validate.name(name)
        return self.snapshots.get(naming.snapshot_id(name))

    def list_snapshots(self, source_volume_id: str | None = None) -> list[Snapshot]:
        return sorted((s for s in self.snapshots.values()
                       if source_volume_id in (None, s.source_volume_id)), key=lambda s: s.id)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.snapshots.pop(snapshot_id, None)
        self.group_sizes.pop(snapshot_id, None)

    # --------------------------------------------------------- group snapshots
    def create_group_snapshot(self, name: str, source_volume_ids: Sequence[str]) -> GroupSnapshot:
        return groups.create(MemoryGroups(self), name, source_volume_ids)

    def get_group_snapshot(self, group_id: str) -> GroupSnapshot:
        return groups.get(MemoryGroups(self), group_id)

    def delete_group_snapshot(self, group_id: str) -> None:
        groups.delete(MemoryGroups(self), group_id)

    # ---------------------------------------------------------------- capacity
    def capacity(self) -> Capacity:
        provisioned = sum(v.size_bytes for v in self.volumes.values())
        limit = int(self.pool_bytes * self.overcommit_ratio)
        available = 0 if self.fill.level != "ok" else max(0, limit - provisioned)
        return Capacity(self.pool_bytes, int(self.pool_bytes * self.fill.data_percent / 100), provisioned,
                        available, self.fill.data_percent, self.fill.metadata_percent,
                        self.overcommit_ratio, EXTENT)

    # ----------------------------------------------------------------- exports
    def portals(self) -> tuple[Portal, ...]:
        return self._portals

    def export_volume(self, volume_id: str, hosts: Iterable[str] = ()) -> Export:
        wanted = frozenset(validate.host_nqn(h) for h in hosts)
        with self._lock:
            self.get_volume(volume_id)
            self.exports[volume_id] = wanted
            return self._describe(volume_id)

    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False, auth: str = "none") -> Export:
        validate.host_nqn(host_nqn)
        dhchap.check_mode(auth)
        with self._lock:
            self.get_volume(volume_id)
            self.credentials[(volume_id, host_nqn)] = HostCredentials.generate(auth)
            self.exports[volume_id] = self.exports.get(volume_id, frozenset()) | {host_nqn}
            ro = self.readonly.get(volume_id, frozenset()) - {host_nqn}
            self.readonly[volume_id] = ro | ({host_nqn} if readonly else frozenset())
            return self._describe(volume_id)

    def host_credentials(self, volume_id: str, host_nqn: str) -> HostCredentials:
        validate.volume_id(volume_id)
        validate.host_nqn(host_nqn)
        with self._lock:
            if host_nqn not in self.exports.get(volume_id, frozenset()):
                raise NotFound(f"volume {volume_id} is not exported to host_nqn {host_nqn}")
            return self.credentials.get((volume_id, host_nqn), HostCredentials())

    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        with self._lock:
            self.credentials.pop((volume_id, host_nqn), None)
            if volume_id not in self.exports:
                return None
            self.exports[volume_id] = self.exports[volume_id] - {host_nqn}
            return self._describe(volume_id)

    def unexport_volume(self, volume_id: str) -> None:
        self.exports.pop(volume_id, None)
        self.credentials = {k: v for k, v in self.credentials.items() if k[0] != volume_id}
        self.readonly.pop(volume_id, None)

    def get_export(self, volume_id: str) -> Export | None:
        return self._describe(volume_id) if volume_id in self.exports else None

    def list_exports(self, volume_ids: Collection[str] | None = None) -> list[Export]:
        return only([self._describe(v) for v in sorted(self.exports)], volume_ids)

    def health(self) -> Health:
        return Health(ready=True, problems=(self.fill.reason,) if self.fill.level == "critical" else ())

    # ---------------------------------------------------------------- internals
    def _source_size(self, source: Source) -> int:
        table = self.snapshots if source.kind == "snapshot" else self.volumes
        check = validate.snapshot_id if source.kind == "snapshot" else validate.volume_id
        check(source.id)
        if source.id not in table:
            raise NotFound(f"source {source.kind} {source.id} not found")
        return table[source.id].size_bytes

    def _check_fill(self) -> None:
        if self.fill.level != "ok":
            raise NoSpace(f"refusing to create: {self.fill.reason}")

    def _check_room(self, extra: int) -> None:
        provisioned = sum(v.size_bytes for v in self.volumes.values())
        limit = int(self.pool_bytes * self.overcommit_ratio)
        if provisioned + extra > limit:
            raise NoSpace(f"{extra} more bytes exceed the thin pool's overcommit limit "
                          f"({provisioned} of {limit} bytes provisioned)")

    def _describe(self, volume_id: str) -> Export:
        return naming.export(volume_id, self._portals, self.exports[volume_id], self.readonly.get(volume_id, ()))


class MemoryGroups:
    """The group algorithm's store for the fake: no I/O here, so holding the backend's
    lock across the whole set is the fence (nothing changes any member meanwhile)."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend

    def group_lock(self):
        return self.backend._lock

    def members(self, group_id: str) -> list[tuple[Snapshot, int]]:
        return [(s, self.backend.group_sizes[s.id]) for s in self.backend.snapshots.values()
                if s.group_id == group_id]

    def has_volume(self, volume_id: str) -> bool:
        return volume_id in self.backend.volumes

    def fence(self, volume_ids: Sequence[str]):
        return contextlib.nullcontext(lambda volume_id: None)

    def take(self, member_name: str, snapshot_id: str, volume_id: str, group_id: str, size: int) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        vol = self.backend.volumes[volume_id]
        self.backend.snapshots[snapshot_id] = Snapshot(snapshot_id, member_name, volume_id, vol.size_bytes, now,
                                                       group_id=group_id)
        self.backend.group_sizes[snapshot_id] = size

    def drop(self, snapshot_id: str) -> None:
        self.backend.delete_snapshot(snapshot_id)
