"""The SPDK backend: thin lvols in one lvstore on a configured base bdev, one NVMe-oF
subsystem per volume, target-side QoS with bdev_set_qos_limit.

What SPDK keeps and what Sluice keeps:
- lvols persist on the base bdev; their names are Sluice's ids (v-…, s-…) derived from
  the CSI name, so a retry finds what the first try made. SPDK has no tags, so the CSI
  name, metadata, source and limits live in Sluice's state file (spdk/state.py).
- transports, subsystems, namespaces, hosts, listeners and QoS limits vanish when
  nvmf_tgt restarts: the state file is the desired state and `sync()` replays it,
  at start-up and whenever the agent finds a target that lost it (health checks, and
  every reconnect to the RPC socket).

Guards SPDK does not have: an exported volume is not deleted (InUse unless the caller
asks to unexport), the lvstore is never deleted while it holds volumes, a namespace
UUID already used by another bdev is refused, and volumes never shrink.
A snapshot SPDK cannot delete yet (2+ clones depend on it) is retired: it disappears
from Sluice's view at once and is deleted when its clones are gone.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog

from nvme_target import groups, naming, validate
from nvme_target.backend import Backend, only, page
from nvme_target.changes import ChangeFeed
from nvme_target.model import Capacity, Export, GroupSnapshot, Health, Portal, QoS, Snapshot, Source, Volume
from nvme_target.spdk.groups import SpdkGroups
from nvme_target.spdk.qos import spdk_limits
from nvme_target.spdk.rpc import SpdkRpc
from nvme_target.spdk.state import SpdkState
from sluice_common.units import MiB, ceil_div, round_up
from sluice_common.errors import (
    AlreadyExists, FailedPrecondition, InUse, InvalidArgument, NoSpace, NotFound, OutOfRange, SluiceError,
    Unavailable,
)

log = structlog.get_logger(__name__)
MODEL = "Sluice"


@dataclass(frozen=True)
class SpdkConfig:
    socket: Path
    base_bdev: str                 # the bdev the lvstore lives on (NVMe, aio, ...)
    lvstore: str = "sluice"
    aio_file: str | None = None    # create base_bdev as an aio bdev on this file or device
    cluster_bytes: int = 4 * MiB


class SpdkBackend(Backend):
    def __init__(self, config: SpdkConfig, portals: tuple[Portal, ...], state_dir: Path,
                 overcommit_ratio: float = 4.0, rpc: SpdkRpc | None = None) -> None:
        self.config = config
        self._portals = portals
        self.rpc = rpc or SpdkRpc(config.socket)
        self.state = SpdkState(state_dir / "spdk-state.json")
        self.overcommit_ratio = overcommit_ratio
        self.changes = ChangeFeed()
        self._lock = threading.RLock()
        self._synced_connection = -1

    # ------------------------------------------------------------------ helpers
    def _call(self, method: str, **params):
        """One RPC. After a (re)connection the target may be a new nvmf_tgt that forgot
        everything: replay the desired state first (and retry a call that failed on it)."""
        try:
            result = self.rpc.call(method, **params)
        except SluiceError:
            if self.rpc.connections == self._synced_connection:
                raise
            self.sync()
            return self.rpc.call(method, **params)
        if self.rpc.connections != self._synced_connection:
            self.sync()
        return result

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
        return Volume(vol_id, rec["name"], size, dict(rec["metadata"]), source, qos)

    # --------------------------------------------------------------- lifecycle
    def sync(self) -> None:
        """Make the target match the desired state: transport, base bdev, lvstore,
        every export (subsystem, namespace, listeners, hosts) and every QoS limit."""
        with self._lock:
            self._synced_connection = self.rpc.connections
            self._ensure("nvmf_create_transport", trtype="TCP")
            if self.config.aio_file:
                self._ensure("bdev_aio_create", name=self.config.base_bdev, filename=self.config.aio_file,
                             block_size=4096)
            try:
                self.rpc.call("bdev_lvol_get_lvstores", lvs_name=self.config.lvstore)
            except NotFound:
                self.rpc.call("bdev_lvol_create_lvstore", bdev_name=self.config.base_bdev,
                              lvs_name=self.config.lvstore, cluster_sz=self.config.cluster_bytes)
                log.info("lvstore created", lvstore=self.config.lvstore, base_bdev=self.config.base_bdev)
            for vol_id, rec in self.state.volumes.items():
                if rec.get("qos") is not None:
                    self._apply_qos(vol_id, QoS.from_params(rec["qos"]))
            for vol_id, hosts in self.state.exports.items():
                self._export(vol_id, hosts)

    def _ensure(self, method: str, **params) -> None:
        try:
            self.rpc.call(method, **params)
        except AlreadyExists:
            pass

    def restore(self) -> None:
        """At agent start: replay now if nvmf_tgt answers; if it does not (yet), the
        first call that reaches it replays (a new connection always does)."""
        try:
            self.sync()
        except Unavailable as exc:
            log.warning("SPDK not answering at start; will replay when it does", error=str(exc))

    def health(self) -> Health:
        try:
            transports = self.rpc.call("nvmf_get_transports")
            if not any(t.get("trtype") == "TCP" for t in transports):
                log.warning("SPDK target lost its state (restarted?): replaying it")
                self.sync()
            self._lvstore()
            return Health(True)
        except SluiceError as exc:
            return Health(False, (str(exc),))

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
                src = Source(rec["source"]["kind"], rec["source"]["id"]) if rec.get("source") else None
                if (rec["name"], existing, rec["metadata"], src) != (name, size, meta, source):
                    raise AlreadyExists(f"volume {name!r} already exists with a different size, metadata or source")
                return self._volume(vol_id, existing)
            if source is not None:
                origin = self._origin(source)
                if size < origin:
                    raise OutOfRange(f"size_bytes {size} is smaller than the source ({origin} bytes)")
            self._check_room(size)
            self.state.put_volume(vol_id, {"name": name, "metadata": meta, "qos": None,
                                           "source": {"kind": source.kind, "id": source.id} if source else None})
            try:
                if existing is None:
                    self._make_lvol(vol_id, size, source)
            except SluiceError:
                self.state.drop_volume(vol_id)
                raise
        log.info("volume created", volume_id=vol_id, size_bytes=size, source=source)
        return self._volume(vol_id)

    def _make_lvol(self, vol_id: str, size: int, source: Source | None) -> None:
        if source is None:
            self._call("bdev_lvol_create", lvol_name=vol_id, size_in_mib=ceil_div(size, MiB),
                       lvs_name=self.config.lvstore, thin_provision=True)
            return
        snapshot = source.id
        if source.kind == "volume":  # SPDK clones only snapshots: snapshot the volume first
            snapshot = "t-" + vol_id[2:]
            self.state.retire(snapshot)  # internal: goes when its clones are gone
            try:
                self._call("bdev_lvol_snapshot", lvol_name=self._alias(source.id), snapshot_name=snapshot)
            except AlreadyExists:
                pass  # made by an earlier try
        self._call("bdev_lvol_clone", snapshot_name=self._alias(snapshot), clone_name=vol_id)
        if size > (self._size(vol_id) or 0):
            self._call("bdev_lvol_resize", name=self._alias(vol_id), size_in_mib=ceil_div(size, MiB))

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

    def set_qos(self, volume_id: str, qos: QoS) -> Volume:
        validate.volume_id(volume_id)
        with self._lock:
            vol = self.get_volume(volume_id)
            self._apply_qos(volume_id, qos)
            self.state.put_volume(volume_id, {**self.state.volumes[volume_id], "qos": qos.as_params()})
        self.changes.bump()
        return replace(vol, qos=qos)

    def _apply_qos(self, vol_id: str, qos: QoS) -> None:
        try:
            self._call("bdev_set_qos_limit", name=self._alias(vol_id), **spdk_limits(qos))
        except NotFound:
            log.warning("limits not applied on the target: lvol missing", volume_id=vol_id)
            return
        log.info("target limits in force", volume_id=vol_id, **self.target_limits(vol_id))

    def target_limits(self, volume_id: str) -> dict[str, int]:
        """What SPDK enforces now (assigned_rate_limits): after its rounding."""
        bdev = self._bdev(volume_id)
        if bdev is None:
            raise NotFound(f"volume {volume_id} not found")
        return dict(bdev["assigned_rate_limits"])

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
            self.state.put_snapshot(snap_id, {"name": name, "source_volume_id": source_volume_id,
                                              "created_at": datetime.now(UTC).replace(microsecond=0).isoformat()})
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

    # ------------------------------------------------------------------ exports
    def portals(self) -> tuple[Portal, ...]:
        return self._portals

    def export_volume(self, volume_id: str, hosts: Iterable[str] = ()) -> Export:
        hosts = frozenset(validate.host_nqn(h) for h in hosts)
        with self._lock:
            self.get_volume(volume_id)
            self._export(volume_id, hosts)
            self.state.put_export(volume_id, hosts)
        return self._describe(volume_id, hosts)

    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False) -> Export:
        validate.host_nqn(host_nqn)
        with self._lock:
            hosts = self.state.exports.get(volume_id, frozenset()) | {host_nqn}
            ro = self.state.readonly.get(volume_id, frozenset()) - {host_nqn} | ({host_nqn} if readonly else set())
            self.get_volume(volume_id)
            self._export(volume_id, hosts)
            self.state.put_export(volume_id, hosts, frozenset(ro))
        return self._describe(volume_id, hosts)

    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        with self._lock:
            if volume_id not in self.state.exports:
                return None
            return self.export_volume(volume_id, self.state.exports[volume_id] - {host_nqn})

    def unexport_volume(self, volume_id: str) -> None:
        with self._lock:
            try:
                self._call("nvmf_delete_subsystem", nqn=naming.subsystem_nqn(volume_id))
            except InvalidArgument:
                if self._subsystem(naming.subsystem_nqn(volume_id)) is not None:
                    raise  # it is there, so that was something else
            self.state.drop_export(volume_id)

    def get_export(self, volume_id: str) -> Export | None:
        hosts = self.state.exports.get(volume_id)
        return self._describe(volume_id, hosts) if hosts is not None else None

    def list_exports(self, volume_ids: Collection[str] | None = None) -> list[Export]:
        return only([self._describe(v, h) for v, h in sorted(self.state.exports.items())], volume_ids)

    def _describe(self, vol_id: str, hosts: frozenset[str]) -> Export:
        return naming.export(vol_id, self._portals, hosts, self.state.readonly.get(vol_id, ()))

    def _subsystem(self, nqn: str) -> dict | None:
        try:
            return self.rpc.call("nvmf_get_subsystems", nqn=nqn)[0]
        except NotFound:
            return None

    def _exported_nqn(self, vol_id: str) -> bool:
        return self._subsystem(naming.subsystem_nqn(vol_id)) is not None

    def _export(self, vol_id: str, hosts: frozenset[str]) -> None:
        """Converge the volume's subsystem on: namespace 1 with Sluice's UUID/NGUID, a
        listener per portal, exactly `hosts`. Each step looks before it acts, so a
        repeat (or a replay after a target restart) does only what is missing."""
        nqn, ns_uuid = naming.subsystem_nqn(vol_id), naming.namespace_uuid(vol_id)
        sub = self._subsystem(nqn)
        if sub is None:
            try:
                self.rpc.call("nvmf_create_subsystem", nqn=nqn, allow_any_host=False,
                              serial_number=naming.serial(vol_id), model_number=MODEL)
            except InvalidArgument:
                if self._subsystem(nqn) is None:  # not a duplicate: the NQN itself is bad
                    raise
            sub = self._subsystem(nqn)
            assert sub is not None
        bdev = self._bdev(vol_id)
        if bdev is None:
            raise NotFound(f"volume {vol_id} not found")
        if not any(ns["bdev_name"] == bdev["name"] for ns in sub["namespaces"]):
            self._guard_uuid(ns_uuid, bdev["name"])
            self.rpc.call("nvmf_subsystem_add_ns", nqn=nqn, namespace={
                "bdev_name": self._alias(vol_id), "nsid": 1, "uuid": ns_uuid,
                "nguid": naming.namespace_nguid(vol_id).replace("-", "").upper()})
        have = {(a["traddr"], str(a["trsvcid"])) for a in sub["listen_addresses"]}
        for portal in self._portals:
            if (portal.traddr, portal.trsvcid) not in have:
                self.rpc.call("nvmf_subsystem_add_listener", nqn=nqn, listen_address={
                    "trtype": "TCP", "adrfam": "IPv6" if portal.adrfam == "ipv6" else "IPv4",
                    "traddr": portal.traddr, "trsvcid": portal.trsvcid})
        allowed = {h["nqn"] for h in sub["hosts"]}
        for host in sorted(hosts - allowed):
            self.rpc.call("nvmf_subsystem_add_host", nqn=nqn, host=host)
        for host in sorted(allowed - hosts):
            self.rpc.call("nvmf_subsystem_remove_host", nqn=nqn, host=host)

    def _guard_uuid(self, ns_uuid: str, bdev_name: str) -> None:
        """SPDK accepts a namespace UUID another bdev already uses; Sluice does not."""
        for sub in self.rpc.call("nvmf_get_subsystems"):
            for ns in sub.get("namespaces", []):
                if ns.get("uuid") == ns_uuid and ns.get("bdev_name") != bdev_name:
                    raise FailedPrecondition(f"namespace UUID {ns_uuid} is already used by bdev {ns['bdev_name']} "
                                             f"in {sub['nqn']}")

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
