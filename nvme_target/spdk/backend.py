"""The SPDK backend: thin lvols in one lvstore on a configured base bdev, one NVMe-oF
subsystem per volume, target-side QoS with bdev_set_qos_limit.

What SPDK keeps and what Sluice keeps:
- lvols persist on the base bdev; their names are Sluice's ids (v-…, s-…) derived from
  the CSI name, so a retry finds what the first try made. SPDK has no tags, so the CSI
  name, metadata, source and limits live in Sluice's state file (spdk/state.py).
- transports, subsystems, namespaces, hosts, listeners and QoS limits vanish when
  nvmf_tgt restarts: the state file is the desired state and spdk/replay.py replays it,
  object by object, at start-up, from a background loop that notices a restarted
  target within seconds, and on every reconnect to the RPC socket.
- limits: SPDK can only change a bdev's limits when the bdev has an I/O channel (it is
  exported); on an unexported bdev that already has limits every bdev_set_qos_limit
  answers -EAGAIN. So the desired limits live in the state file, and are applied when
  the volume is exported (or skipped when SPDK's assigned_rate_limits already match).
- fill: above the high mark (nvme_target/fill.py) of the lvstore's allocated clusters no
  volume, clone or snapshot is created; above the critical mark every volume reports
  the reason in Volume.condition and health() says why.

Guards SPDK does not have: an exported volume is not deleted (InUse unless the caller
asks to unexport), the lvstore is never deleted while it holds volumes, a namespace
UUID already used by another bdev is refused, and volumes never shrink.
A snapshot SPDK cannot delete yet (2+ clones depend on it) is retired: it disappears
from Sluice's view at once and is deleted when its clones are gone.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog

from nvme_target import groups, naming, validate
from nvme_target.backend import Backend, page
from nvme_target.changes import ChangeFeed
from nvme_target.fill import Fill, FillMarks, assess
from nvme_target.model import Capacity, GroupSnapshot, Health, Portal, QoS, Snapshot, Source, Volume
from nvme_target.spdk.auth import SpdkKeys
from nvme_target.pointers import NamePointers
from nvme_target.spdk.exports import MODEL, SpdkExports
from nvme_target.spdk.groups import SpdkGroups
from nvme_target.spdk.limits import SpdkLimits
from nvme_target.spdk.replay import Replay
from nvme_target.spdk.rpc import SpdkRpc
from nvme_target.spdk.state import SpdkState
from sluice_common.units import MiB, ceil_div, round_up
from sluice_common.errors import (
    AlreadyExists, InUse, InvalidArgument, NoSpace, NotFound, OutOfRange, SluiceError,
    Unavailable,
)

log = structlog.get_logger(__name__)
__all__ = ["MODEL", "SpdkBackend", "SpdkConfig", "aio_block_size"]


@dataclass(frozen=True)
class SpdkConfig:
    socket: Path
    base_bdev: str                 # the bdev the lvstore lives on (NVMe, aio, ...)
    lvstore: str = "sluice"
    aio_file: str | None = None    # create base_bdev as an aio bdev on this file or device
    cluster_bytes: int = 4 * MiB
    aio_block_size: int = 0        # 0: a block device's own (SPDK detects it), 4096 for a file
    watch_interval: float = 1.0    # seconds between looks for a restarted target (0: no loop)
    limit_retry_seconds: float = 3.0  # how long an export waits for SPDK to take its limits


def aio_block_size(path: str) -> int:
    """The block_size to pass to bdev_aio_create: none (0) for a block device, whose
    logical block size SPDK detects (passing another one logs an error), 4096 for a
    regular file (SPDK cannot detect one and refuses to guess)."""
    try:
        return 0 if stat.S_ISBLK(os.stat(path).st_mode) else 4096
    except OSError:  # not visible from here (another mount namespace): a file, as before
        return 4096


class SpdkBackend(SpdkExports, SpdkLimits, Backend):
    def __init__(self, config: SpdkConfig, portals: tuple[Portal, ...], state_dir: Path,
                 overcommit_ratio: float = 4.0, rpc: SpdkRpc | None = None,
                 fill_marks: FillMarks | None = None) -> None:
        self.config = config
        self._portals = portals
        self.rpc = rpc or SpdkRpc(config.socket)
        self.state = SpdkState(state_dir / "spdk-state.json")
        self.keys = SpdkKeys(self.rpc, state_dir)
        self.overcommit_ratio = overcommit_ratio
        self.fill_marks = fill_marks or FillMarks()
        self.changes = ChangeFeed()
        self.pointers = NamePointers(state_dir / "name-pointers.json")
        self._lock = threading.RLock()
        self.replay = Replay(self, interval=config.watch_interval)
        self.fault_hook = None  # tests only: called with a step name between two steps

    # ------------------------------------------------------------------ helpers
    def _call(self, method: str, **params):
        """One RPC. After a (re)connection the target may be a new nvmf_tgt that forgot
        everything: replay the desired state first (and retry a call that failed on it)."""
        try:
            result = self.rpc.call(method, **params)
        except SluiceError:
            if not self.replay.settle():
                raise
            return self.rpc.call(method, **params)
        if self.replay.needed():
            self.replay.run()
        return result

    def _step(self, name: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(name)

    def _alias(self, lvol: str) -> str:
        return f"{self.config.lvstore}/{lvol}"

    def _lvols(self) -> dict[str, dict]:
        """Our lvstore's lvols by name."""
        try:
            rows = self._call("bdev_lvol_get_lvols", lvs_name=self.config.lvstore)
        except NotFound:
            raise Unavailable(f"lvstore {self.config.lvstore} is not loaded on base bdev "
                              f"{self.config.base_bdev}") from None
        return {row["name"]: row for row in rows}

    def _bdev(self, lvol: str) -> dict | None:
        try:
            return self._call("bdev_get_bdevs", name=self._alias(lvol))[0]
        except NotFound:
            return None

    def _size(self, lvol: str) -> int | None:
        bdev = self._bdev(lvol)
        return bdev["num_blocks"] * bdev["block_size"] if bdev else None

    def _lvstore(self) -> dict:
        try:
            return self._call("bdev_lvol_get_lvstores", lvs_name=self.config.lvstore)[0]
        except NotFound:
            raise Unavailable(f"lvstore {self.config.lvstore} is not loaded") from None

    def _volume(self, vol_id: str, size: int | None = None) -> Volume:
        rec = self.state.volumes[vol_id]
        size = size if size is not None else self._size(vol_id)
        if size is None:
            raise NotFound(f"volume {vol_id} not found")
        source = Source(rec["source"]["kind"], rec["source"]["id"]) if rec.get("source") else None
        qos = QoS.from_params(rec["qos"]) if rec.get("qos") is not None else None
        fill = self._fill()
        condition = fill.reason if fill.level == "critical" else ""
        return Volume(vol_id, rec["name"], size, dict(rec["metadata"]), source, qos, condition)

    # --------------------------------------------------------------- lifecycle
    def sync(self) -> bool:
        """Make the target match the desired state now (see spdk/replay.py); True when
        every object is in place."""
        return self.replay.run(force=True)

    def ensure_base(self) -> int:
        """The TCP transport, the base bdev and the lvstore, each made only when missing.
        Returns the RPC connection this ran on."""
        transports = self.rpc.call("nvmf_get_transports")
        connection = self.rpc.connections
        if not any(t.get("trtype") == "TCP" for t in transports):
            self.rpc.call("nvmf_create_transport", trtype="TCP")
        if self._lvstore_loaded():
            return connection
        if self.config.aio_file and self.config.base_bdev not in {b["name"] for b in self.rpc.call("bdev_get_bdevs")}:
            self.rpc.call("bdev_aio_create", **self._aio_params())
        if not self._lvstore_loaded():
            self.rpc.call("bdev_lvol_create_lvstore", bdev_name=self.config.base_bdev,
                          lvs_name=self.config.lvstore, cluster_sz=self.config.cluster_bytes)
            log.info("lvstore created", lvstore=self.config.lvstore, base_bdev=self.config.base_bdev)
        return connection

    def _aio_params(self) -> dict:
        assert self.config.aio_file
        params: dict = {"name": self.config.base_bdev, "filename": self.config.aio_file}
        block_size = self.config.aio_block_size or aio_block_size(self.config.aio_file)
        if block_size:
            params["block_size"] = block_size
        return params

    def _lvstore_loaded(self) -> bool:
        return any(s["name"] == self.config.lvstore for s in self.rpc.call("bdev_lvol_get_lvstores"))

    def has_transport(self) -> bool:
        """The cheap question the replay loop asks: a target that lost its TCP transport
        restarted (or was reset) and lost everything else too."""
        return any(t.get("trtype") == "TCP" for t in self.rpc.call("nvmf_get_transports"))

    def restore_export(self, vol_id: str, hosts: frozenset[str], subsystems: Mapping[str, dict]) -> None:
        """Replay one export and its limits."""
        self._export(vol_id, hosts, subsystems)
        self._limits_at_export(vol_id)

    def restore(self) -> None:
        """At agent start: replay now if nvmf_tgt answers (each object on its own; what
        fails is reported by health() and retried), then keep watching for a restarted
        target in the background. Never fails the start."""
        if not self.replay.run(force=True):
            log.warning("SPDK state not fully restored at start; the replay loop keeps trying",
                        problems=sorted(self.replay.problems.values()))
        self.replay.start()

    def close(self) -> None:
        self.replay.stop()
        self.rpc.close()

    def health(self) -> Health:
        try:
            if not self.has_transport():
                log.warning("SPDK target lost its state (restarted?): replaying it")
                self.replay.run(force=True)
            fill = self._fill(fresh=True)
        except SluiceError as exc:
            return Health(False, (str(exc),))
        problems = [why for key, why in sorted(self.replay.problems.items())]
        problems += [f"limits of {vol_id} not in force on the target yet; retrying"
                     for vol_id in sorted(self.replay.pending_limits)]
        if fill.level != "ok":
            problems.append(fill.reason)
        if "target" in self.replay.problems:
            return Health(False, tuple(problems))
        return Health(True, tuple(problems))

    # --------------------------------------------------------------------- fill
    def resync(self) -> None:
        """Lvols are read from nvmf_tgt on every call; only the fill is cached."""
        self._fill(fresh=True)

    def _fill(self, fresh: bool = False) -> Fill:
        """The lvstore's fill (allocated clusters) judged against the marks; cached for a
        second unless `fresh` (decisions that refuse a create always look now)."""
        cached = getattr(self, "_fill_cache", None)
        if not fresh and cached is not None and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        lvs = self._lvstore()
        total = lvs["total_data_clusters"]
        percent = 100.0 * (total - lvs["free_clusters"]) / total if total else 0.0
        fill = assess(f"lvstore {self.config.lvstore}", percent, 0.0, self.fill_marks)
        self._fill_cache = (time.monotonic(), fill)
        return fill

    def _check_fill(self) -> None:
        fill = self._fill(fresh=True)
        if fill.level != "ok":
            raise NoSpace(f"no new volumes, clones or snapshots: {fill.reason}",
                          pool=self.config.lvstore, data_percent=round(fill.data_percent, 1))

    # ------------------------------------------------------------------ volumes
    def create_volume(self, name: str, size_bytes: int, metadata: Mapping[str, str] | None = None,
                      source: Source | None = None) -> Volume:
        validate.name(name)
        validate.size(size_bytes)
        meta = validate.metadata(metadata)
        vol_id = naming.volume_id(name)
        cluster = self._lvstore()["cluster_size"]
        size = round_up(size_bytes, cluster)
        with self._lock:
            rec = self.state.volumes.get(vol_id)
            existing = self._size(vol_id)
            if rec is not None and existing is not None:
                if not self._unfinished(rec, existing, size):
                    self._same_volume(rec, existing, name, size, meta, source)
                    return self._volume(vol_id, existing)
            else:
                self._new_volume_allowed(size, source)
            record = {"name": name, "metadata": meta, "qos": None, "size": size,
                      "source": {"kind": source.kind, "id": source.id} if source else None}
            if rec is not None and rec.get("size") == size:
                record["qos"] = rec.get("qos")
            self.state.put_volume(vol_id, record)
            self._step("volume recorded")
            try:
                self._make_lvol(vol_id, size, source, existing)
            except SluiceError:
                self._undo_lvol(vol_id)
                raise
        log.info("volume created", volume_id=vol_id, size_bytes=size, source=source)
        return self._volume(vol_id)

    @staticmethod
    def _unfinished(rec: dict, existing: int, size: int) -> bool:
        """A create that died between the clone and its resize: the record names the
        size it was going to, the lvol is still smaller. The retry finishes it."""
        return rec.get("size") == size and existing < size

    @staticmethod
    def _same_volume(rec: dict, existing: int, name: str, size: int, meta: dict, source: Source | None) -> None:
        src = Source(rec["source"]["kind"], rec["source"]["id"]) if rec.get("source") else None
        if (rec["name"], existing, rec["metadata"], src) != (name, size, meta, source):
            raise AlreadyExists(f"volume {name!r} already exists with a different size, metadata or source")

    def _new_volume_allowed(self, size: int, source: Source | None) -> None:
        if source is not None:
            origin = self._origin(source)
            if size < origin:
                raise OutOfRange(f"size_bytes {size} is smaller than the source ({origin} bytes)")
        self._check_fill()
        self._check_room(size)

    def _undo_lvol(self, vol_id: str) -> None:
        """A create that failed (not crashed) leaves nothing behind: neither its lvol
        nor its record."""
        try:
            self.rpc.call("bdev_lvol_delete", name=self._alias(vol_id))
        except NotFound:
            pass
        except SluiceError as exc:  # the record stays: the retry or a delete finds the lvol
            log.warning("lvol of a failed create not removed", volume_id=vol_id, error=str(exc))
            return
        self.state.drop_volume(vol_id)

    def _make_lvol(self, vol_id: str, size: int, source: Source | None, existing: int | None) -> None:
        """Each step is skipped when an earlier (crashed) try already did it."""
        if source is None:
            if existing is None:
                self._call("bdev_lvol_create", lvol_name=vol_id, size_in_mib=ceil_div(size, MiB),
                           lvs_name=self.config.lvstore, thin_provision=True)
            return
        if existing is None:
            self._clone(vol_id, source)
            self._step("clone made")
        if size > (self._size(vol_id) or 0):
            self._call("bdev_lvol_resize", name=self._alias(vol_id), size_in_mib=ceil_div(size, MiB))

    def _clone(self, vol_id: str, source: Source) -> None:
        snapshot = source.id
        if source.kind == "volume":  # SPDK clones only snapshots: snapshot the volume first
            snapshot = "t-" + vol_id[2:]
            self.state.retire(snapshot)  # internal: goes when its clones are gone
            try:
                self._call("bdev_lvol_snapshot", lvol_name=self._alias(source.id), snapshot_name=snapshot)
            except AlreadyExists:
                pass  # made by an earlier try
            self._step("internal snapshot made")
        try:
            self._call("bdev_lvol_clone", snapshot_name=self._alias(snapshot), clone_name=vol_id)
        except AlreadyExists:
            pass  # made by an earlier try

    def _origin(self, source: Source) -> int:
        known = self.state.snapshots if source.kind == "snapshot" else self.state.volumes
        size = self._size(source.id) if source.id in known else None
        if size is None:
            raise NotFound(f"{source.kind} {source.id} not found")
        return size

    def _check_room(self, extra: int) -> None:
        cap = self.capacity()
        if extra > cap.available_bytes:
            raise NoSpace(f"{extra} more bytes exceed the lvstore's {cap.total_bytes} bytes "
                          f"x overcommit {self.overcommit_ratio} ({cap.provisioned_bytes} provisioned)")

    def get_volume(self, volume_id: str) -> Volume:
        validate.volume_id(volume_id)
        if volume_id not in self.state.volumes:
            raise NotFound(f"volume {volume_id} not found")
        return self._volume(volume_id)

    def find_volume(self, name: str) -> Volume | None:
        validate.name(name)
        vol_id = naming.volume_id(name)
        rec = self.state.volumes.get(vol_id)
        if rec is None or rec["name"] != name:
            return None
        size = self._size(vol_id)
        return self._volume(vol_id, size) if size is not None else None

    def list_volumes(self, start_after: str = "", limit: int = 0) -> list[Volume]:
        lvols = self._lvols()
        ids = page((v for v in sorted(self.state.volumes) if v in lvols), str, start_after, limit)
        return [self._volume(vol_id) for vol_id in ids]

    def delete_volume(self, volume_id: str, unexport: bool = False) -> None:
        try:
            validate.volume_id(volume_id)
        except NotFound:
            return
        with self._lock:
            if volume_id in self.state.exports or self._exported_nqn(volume_id):
                if not unexport:  # SPDK would delete it and hot-remove the namespace
                    raise InUse(f"volume {volume_id} is exported; unexport it first")
                self.unexport_volume(volume_id)
            try:
                self._call("bdev_lvol_delete", name=self._alias(volume_id))
            except NotFound:
                pass
            self.state.drop_volume(volume_id)
            self._collect_retired()
        log.info("volume deleted", volume_id=volume_id)

    def expand_volume(self, volume_id: str, size_bytes: int) -> Volume:
        validate.volume_id(volume_id)
        validate.size(size_bytes)
        with self._lock:
            current = self.get_volume(volume_id)
            cluster = self._lvstore()["cluster_size"]
            size = round_up(size_bytes, cluster)
            if size < current.size_bytes:  # SPDK would shrink it: Sluice never does
                raise InvalidArgument(f"size_bytes {size_bytes} is smaller than the volume "
                                      f"({current.size_bytes} bytes): volumes only grow")
            if size == current.size_bytes:
                return current
            self._check_room(size - current.size_bytes)
            self._call("bdev_lvol_resize", name=self._alias(volume_id), size_in_mib=size // MiB)
        log.info("volume expanded", volume_id=volume_id, size_bytes=size)
        return replace(current, size_bytes=self._size(volume_id))

    # ---------------------------------------------------------------- snapshots
    def create_snapshot(self, name: str, source_volume_id: str) -> Snapshot:
        validate.name(name)
        snap_id = naming.snapshot_id(name)
        with self._lock:
            rec = self.state.snapshots.get(snap_id)
            if rec is not None:
                if rec["source_volume_id"] != source_volume_id:
                    raise AlreadyExists(f"snapshot {name!r} already exists for volume {rec['source_volume_id']}")
                if self._size(snap_id) is not None:
                    return self._snapshot(snap_id)
            validate.volume_id(source_volume_id)
            if source_volume_id not in self.state.volumes or self._size(source_volume_id) is None:
                raise NotFound(f"volume {source_volume_id} not found")
            if rec is None:
                self._check_fill()
            self.state.put_snapshot(snap_id, {"name": name, "source_volume_id": source_volume_id,
                                              "created_at": datetime.now(UTC).replace(microsecond=0).isoformat()})
            self._step("snapshot recorded")
            try:
                self._call("bdev_lvol_snapshot", lvol_name=self._alias(source_volume_id), snapshot_name=snap_id)
            except AlreadyExists:
                pass  # an earlier try made it
            except SluiceError:
                self.state.drop_snapshot(snap_id)
                raise
        return self._snapshot(snap_id)

    def _snapshot(self, snap_id: str) -> Snapshot:
        rec = self.state.snapshots[snap_id]
        size = self._size(snap_id)
        if size is None:
            raise NotFound(f"snapshot {snap_id} not found")
        return Snapshot(snap_id, rec["name"], rec["source_volume_id"], size,
                        datetime.fromisoformat(rec["created_at"]), True, rec.get("group", ""))

    def get_snapshot(self, snapshot_id: str) -> Snapshot:
        validate.snapshot_id(snapshot_id)
        if snapshot_id not in self.state.snapshots:
            raise NotFound(f"snapshot {snapshot_id} not found")
        return self._snapshot(snapshot_id)

    def find_snapshot(self, name: str) -> Snapshot | None:
        validate.name(name)
        snap_id = naming.snapshot_id(name)
        rec = self.state.snapshots.get(snap_id)
        if rec is None or rec["name"] != name or self._size(snap_id) is None:
            return None
        return self._snapshot(snap_id)

    def list_snapshots(self, source_volume_id: str | None = None) -> list[Snapshot]:
        lvols = self._lvols()
        return [self._snapshot(s) for s in sorted(self.state.snapshots)
                if s in lvols and source_volume_id in (None, self.state.snapshots[s]["source_volume_id"])]

    def delete_snapshot(self, snapshot_id: str) -> None:
        try:
            validate.snapshot_id(snapshot_id)
        except NotFound:
            return
        with self._lock:
            if snapshot_id not in self.state.snapshots:
                return
            try:
                self._call("bdev_lvol_delete", name=self._alias(snapshot_id))
            except NotFound:
                pass
            except InUse:  # 2+ clones share its data: retire it, delete it when they are gone
                self.state.retire(snapshot_id)
                log.info("snapshot retired until its clones are gone", snapshot_id=snapshot_id)
            self.state.drop_snapshot(snapshot_id)

    # ----------------------------------------------------------- group snapshots
    def create_group_snapshot(self, name: str, source_volume_ids: Sequence[str]) -> GroupSnapshot:
        return groups.create(SpdkGroups(self), name, source_volume_ids)  # one volume only: spdk/groups.py

    def get_group_snapshot(self, group_id: str) -> GroupSnapshot:
        return groups.get(SpdkGroups(self), group_id)

    def delete_group_snapshot(self, group_id: str) -> None:
        groups.delete(SpdkGroups(self), group_id)

    def _collect_retired(self) -> None:
        for lvol in list(self.state.retired):
            try:
                self._call("bdev_lvol_delete", name=self._alias(lvol))
            except NotFound:
                pass
            except InUse:
                continue
            self.state.unretire(lvol)
            log.info("retired snapshot deleted", lvol=lvol)

    # ---------------------------------------------------------------- capacity
    def capacity(self) -> Capacity:
        lvs = self._lvstore()
        cluster = lvs["cluster_size"]
        total = lvs["total_data_clusters"] * cluster
        lvols = self._lvols()
        used = sum(row["num_allocated_clusters"] for row in lvols.values()) * cluster
        provisioned = sum(self._size(v) or 0 for v in self.state.volumes if v in lvols)
        return Capacity(
            total_bytes=total, used_bytes=used, provisioned_bytes=provisioned,
            available_bytes=max(0, int(total * self.overcommit_ratio) - provisioned),
            data_percent=round(100.0 * used / total, 2) if total else 0.0, metadata_percent=0.0,
            overcommit_ratio=self.overcommit_ratio, allocation_unit_bytes=cluster)

    # ----------------------------------------------------------- decommission
    def delete_lvstore(self) -> None:
        """Remove the (empty) lvstore. SPDK would destroy every lvol in it, exported or
        not: Sluice refuses while any volume or snapshot is left."""
        with self._lock:
            lvols = self._lvols()
            if lvols:
                raise InUse(f"lvstore {self.config.lvstore} still holds {len(lvols)} lvols "
                            f"({', '.join(sorted(lvols)[:5])})")
            self._call("bdev_lvol_delete_lvstore", lvs_name=self.config.lvstore)
