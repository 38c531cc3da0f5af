"""The node's CSI operations in plain Python: turn a published volume into a mounted
filesystem or a raw block device for a pod, and take it away again cleanly.

Every step is idempotent (a repeated or restarted call converges) and a failing stage
rolls back what it did itself: a mount it made, a connection it opened.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from csi_driver.capabilities import Capability, require_supported
from csi_driver.locks import InFlight
from csi_driver.node import devices, fabrics, filesystems, mounts
from csi_driver.node.hostid import HostIdentity
from csi_driver.node.limits import PodLimits
from csi_driver.node.limits_watch import LimitsWatch
from csi_driver.node.staging import StagingRecord, StagingStore
from csi_driver.targets import Targets
from nvme_target.model import QoS
from sluice_common.errors import FailedPrecondition, InvalidArgument, NotFound, SluiceError, Unavailable

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    state_dir: Path
    topology: Mapping[str, str]
    max_volumes: int = 256
    host_iface: str = ""
    host_traddr: str = ""
    device_timeout: float = 60.0
    cgroup_root: Path = Path("/sys/fs/cgroup")
    sync_interval: float = 2.0   # how often limits are re-checked (reconnects, new cgroups)


POD_UID_KEY = "csi.storage.k8s.io/pod.uid"


@dataclass(frozen=True)
class Usage:
    total: int
    available: int
    used: int
    unit: str  # "BYTES" or "INODES"


@dataclass(frozen=True)
class Stats:
    usage: tuple[Usage, ...]
    abnormal: bool
    message: str


class NodeService:
    def __init__(self, identity: HostIdentity, config: NodeConfig, inflight: InFlight | None = None,
                 targets: Targets | None = None) -> None:
        """`targets`: the storage nodes to watch for live limit changes (None: limits
        change only when a volume is staged again)."""
        self.identity = identity
        self.config = config
        self.store = StagingStore(config.state_dir)
        self.inflight = inflight or InFlight()
        self.limits = PodLimits(config.cgroup_root)
        self.watch = LimitsWatch(targets, self._watched, self.limits_changed) if targets is not None else None
        self._stopped = threading.Event()
        self._locks_lock = threading.Lock()
        self._record_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Re-apply every published volume's limits (a restarted plugin), then keep them:
        watch the targets for changes and re-check every few seconds for reconnects."""
        self.sync_limits()
        if self.watch is not None:
            self.watch.start()
        threading.Thread(target=self._keep_limits, name="limits-sync", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self.watch is not None:
            self.watch.close()

    def _keep_limits(self) -> None:
        while not self._stopped.wait(self.config.sync_interval):
            self.sync_limits()

    def sync_limits(self) -> None:
        for record in self.store.all():
            if not record.pod_uids():
                continue
            lock = self._record_lock(record.volume_id)
            if not lock.acquire(blocking=False):
                continue  # a CSI call is working on it; next round
            try:
                fresh = self.store.find(record.volume_id)
                if fresh is not None:
                    self.limits.sync(fresh)
            except SluiceError as exc:
                log.warning("limits sync failed", volume_id=record.volume_id, error=str(exc))
            finally:
                lock.release()

    def _watched(self) -> list[str]:
        return [r.volume_id for r in self.store.all() if r.pod_uids()]

    def limits_changed(self, volume_id: str, limits: QoS) -> None:
        """The target reports new limits for a volume: record them and apply them to
        every pod using it (waits for an operation in flight on the volume)."""
        lock = self._record_lock(volume_id)
        if not lock.acquire(timeout=300):
            log.warning("limits change not applied yet: volume busy", volume_id=volume_id)
            return
        try:
            record = self.store.find(volume_id)
            if record is None or record.limits == limits:
                return
            record = replace(record, qos=limits.as_params())
            self.store.save(record)
            log.info("volume limits changed at the target", volume_id=volume_id, **record.qos)
            self.limits.sync(record)
        finally:
            lock.release()

    def _record_lock(self, volume_id: str) -> threading.Lock:
        """Serializes changes to a volume's staging record and its io.max lines between
        the CSI calls (which also hold the InFlight guard, so they never wait on each
        other) and the background limit keeping (which must never make a CSI call
        answer ABORTED). One small lock per volume seen since start."""
        with self._locks_lock:
            return self._record_locks.setdefault(volume_id, threading.Lock())

    # ------------------------------------------------------------------ info
    def info(self) -> tuple[str, int, Mapping[str, str]]:
        log.info("node info", host_nqn=self.identity.host_nqn, host_id=self.identity.host_id)
        return self.identity.host_nqn, self.config.max_volumes, self.config.topology

    # ----------------------------------------------------------------- stage
    def stage(self, volume_id: str, publish_context: Mapping[str, str], staging_path: str,
              cap: Capability | None, volume_context: Mapping[str, str]) -> None:
        _require(volume_id, "volume_id")
        _require(staging_path, "staging_target_path")
        if cap is None:
            raise InvalidArgument("volume_capability is required")
        require_supported([cap], "volume_capability")
        spec, ns_uuid = self._connect_spec(publish_context, volume_context)
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            already = bool(fabrics.controllers(spec.subnqn, spec.host_nqn))
            device = self._attach(spec, ns_uuid)
            try:
                if cap.access_type == "mount":
                    self._mount_staging(device, staging_path, cap)
                else:
                    Path(staging_path).mkdir(parents=True, exist_ok=True)
                before = self.store.load(staging_path)
                record = StagingRecord(
                    volume_id=volume_id, staging_path=staging_path, subnqn=spec.subnqn, ns_uuid=ns_uuid,
                    portals=publish_context["nvme.portals"], access_type=cap.access_type,
                    fs_type=cap.fs if cap.access_type == "mount" else "", read_only=cap.read_only,
                    context=dict(volume_context),
                    publications=before.publications if before else (),
                    pods=before.pods if before else {},
                    # limits the target sent since win over the (older) publish context
                    qos=before.qos if before else QoS.from_params(publish_context).as_params())
                self.store.save(record)
            except Exception:
                if not already:
                    fabrics.disconnect(spec.subnqn, spec.host_nqn)
                raise
            self.limits.sync(record)  # staged again after a reconnect: the device is new
        log.info("staged", volume_id=volume_id, device=device, access_type=cap.access_type)

    def _connect_spec(self, pc: Mapping[str, str], vc: Mapping[str, str]) -> tuple[fabrics.ConnectSpec, str]:
        for key in ("nvme.subnqn", "nvme.nsUUID", "nvme.portals"):
            if not pc.get(key):
                raise InvalidArgument(f"publish_context is missing {key}: was the volume ControllerPublished?")
        tunable = {k: int(v) for k, v in vc.items() if k.startswith("nvme.") and v.isdigit()}
        spec = fabrics.ConnectSpec(
            subnqn=pc["nvme.subnqn"], portals=fabrics.parse_portals(pc["nvme.portals"]),
            host_nqn=self.identity.host_nqn, host_id=self.identity.host_id,
            ctrl_loss_tmo=tunable.get("nvme.ctrlLossTmo", 60),
            reconnect_delay=tunable.get("nvme.reconnectDelay", 2),
            keep_alive_tmo=tunable.get("nvme.keepAliveTmo", 5),
            nr_io_queues=min(tunable.get("nvme.nrIoQueues", 4), os.cpu_count() or 4),
            host_iface=self.config.host_iface, host_traddr=self.config.host_traddr)
        return spec, pc["nvme.nsUUID"]

    def _attach(self, spec: fabrics.ConnectSpec, ns_uuid: str) -> str:
        with devices.NamespaceWatch() as watch:
            fabrics.connect(spec)
            return watch.wait(ns_uuid, self.config.device_timeout)

    def _mount_staging(self, device: str, staging_path: str, cap: Capability) -> None:
        Path(staging_path).mkdir(parents=True, exist_ok=True)
        mounted = mounts.at(staging_path)
        if mounted is not None:
            if mounted.majmin != devices.majmin(device):
                raise FailedPrecondition(f"{staging_path} is already mounted from another device")
            return
        filesystems.ensure(f"/dev/{device}", cap.fs)
        flags = tuple(cap.mount_flags) + (("ro",) if cap.read_only else ())
        mounts.mount(f"/dev/{device}", staging_path, cap.fs, flags)

    # --------------------------------------------------------------- unstage
    def unstage(self, volume_id: str, staging_path: str) -> None:
        _require(volume_id, "volume_id")
        _require(staging_path, "staging_target_path")
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            record = self.store.load(staging_path) or self.store.find(volume_id)
            if mounts.at(staging_path) is not None:
                os.sync()
                mounts.umount(staging_path)
            if record is not None:
                device = devices.find_by_uuid(record.ns_uuid)
                if device is not None:
                    _flush(device)
                fabrics.disconnect(record.subnqn, self.identity.host_nqn)
                self.store.remove(record)
        log.info("unstaged", volume_id=volume_id)

    # --------------------------------------------------------------- publish
    def publish(self, volume_id: str, staging_path: str, target_path: str, cap: Capability | None,
                readonly: bool, volume_context: Mapping[str, str] | None = None) -> None:
        _require(volume_id, "volume_id")
        _require(staging_path, "staging_target_path")
        _require(target_path, "target_path")
        if cap is None:
            raise InvalidArgument("volume_capability is required")
        require_supported([cap], "volume_capability")
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            record = self.store.load(staging_path)
            if record is None:
                raise FailedPrecondition(f"volume {volume_id} is not staged at {staging_path}")
            others = [p for p in record.publications if p != target_path]
            if cap.mode == "SINGLE_NODE_SINGLE_WRITER" and others:
                raise FailedPrecondition(f"volume {volume_id} is already published at {others[0]} "
                                         "(SINGLE_NODE_SINGLE_WRITER)")
            read_only = readonly or cap.read_only
            pod_uid = (volume_context or {}).get(POD_UID_KEY, "")
            self.limits.check(record, pod_uid)  # before any change: no pod cgroup, no publish
            mounted_here = False
            if mounts.at(target_path) is None:
                source = self._publish_source(record, staging_path, target_path)
                mounts.bind(source, target_path, read_only)
                mounted_here = True
            published = record.with_publication(target_path, pod_uid)
            self.store.save(published)
            try:
                if pod_uid and not published.limits.unlimited:
                    self.limits.apply(published, pod_uid)
            except Exception:
                self.store.save(record)
                if mounted_here:
                    mounts.umount(target_path)
                raise
        if pod_uid and self.watch is not None:
            self.watch.refresh()
        log.info("published", volume_id=volume_id, target_path=target_path, read_only=read_only,
                 pod_uid=pod_uid, limits=published.qos)

    def _publish_source(self, record: StagingRecord, staging_path: str, target_path: str) -> str:
        target = Path(target_path)
        if record.access_type == "mount":
            if mounts.at(staging_path) is None:
                raise FailedPrecondition(f"{staging_path} is not mounted: stage the volume again")
            target.mkdir(parents=True, exist_ok=True)
            return staging_path
        device = devices.find_by_uuid(record.ns_uuid)
        if device is None:
            raise Unavailable(f"namespace {record.ns_uuid} of {record.volume_id} is not attached")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
        return f"/dev/{device}"

    def unpublish(self, volume_id: str, target_path: str) -> None:
        _require(volume_id, "volume_id")
        _require(target_path, "target_path")
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            if mounts.at(target_path) is not None:
                mounts.umount(target_path)
            path = Path(target_path)
            if path.is_dir():
                path.rmdir()
            elif path.exists():
                path.unlink()
            record = self.store.find(volume_id)
            pod_uid = record.pods.get(target_path, "") if record is not None else ""
            if record is not None and target_path in record.publications:
                remaining = record.without_publication(target_path)
                if pod_uid and pod_uid not in remaining.pod_uids():
                    self.limits.clear(record, pod_uid)
                self.store.save(remaining)
        if pod_uid and self.watch is not None:
            self.watch.refresh()
        log.info("unpublished", volume_id=volume_id, target_path=target_path, pod_uid=pod_uid)

    # ---------------------------------------------------------- stats/expand
    def stats(self, volume_id: str, volume_path: str) -> Stats:
        _require(volume_id, "volume_id")
        _require(volume_path, "volume_path")
        record = self.store.find(volume_id)
        if record is None or not os.path.exists(volume_path):
            raise NotFound(f"volume {volume_id} is not available at {volume_path} on this node")
        abnormal, message = self._condition(record, volume_path)
        if record.access_type == "block":
            device = devices.find_by_uuid(record.ns_uuid)
            size = devices.size_bytes(device) if device else 0
            return Stats((Usage(size, 0, 0, "BYTES"),), abnormal, message)
        st = os.statvfs(volume_path)
        usage = (Usage(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize,
                       (st.f_blocks - st.f_bfree) * st.f_frsize, "BYTES"),
                 Usage(st.f_files, st.f_favail, st.f_files - st.f_ffree, "INODES"))
        return Stats(usage, abnormal, message)

    def _condition(self, record: StagingRecord, volume_path: str) -> tuple[bool, str]:
        ctrls = fabrics.controllers(record.subnqn, self.identity.host_nqn)
        if not ctrls:
            return True, f"no NVMe/TCP controller for {record.subnqn}: the connection is gone"
        states = {c: fabrics.state(c) for c in ctrls}
        if not any(s == "live" for s in states.values()):
            return True, "controller " + ", ".join(f"{c} is {s}" for c, s in states.items())
        mounted = mounts.at(volume_path)
        if record.access_type == "mount" and mounted is not None and mounted.read_only and not record.read_only:
            return True, "the filesystem is read-only (remounted after an error?)"
        return False, "volume is healthy"

    def expand(self, volume_id: str, volume_path: str, required: int) -> int:
        _require(volume_id, "volume_id")
        _require(volume_path, "volume_path")
        record = self.store.find(volume_id)
        if record is None:
            raise NotFound(f"volume {volume_id} is not staged on this node")
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            device = devices.find_by_uuid(record.ns_uuid)
            if device is None:
                raise Unavailable(f"namespace {record.ns_uuid} of {volume_id} is not attached")
            for ctrl in fabrics.controllers(record.subnqn, self.identity.host_nqn):
                fabrics.rescan(ctrl)
            _wait_size(device, required, self.config.device_timeout)
            if record.access_type == "mount":
                filesystems.grow(f"/dev/{device}", record.fs_type, record.staging_path)
            size = devices.size_bytes(device)
        log.info("expanded on node", volume_id=volume_id, size_bytes=size)
        return size


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required")


def _flush(device: str) -> None:
    try:
        fd = os.open(f"/dev/{device}", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _wait_size(device: str, required: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while devices.size_bytes(device) < required:
        if time.monotonic() > deadline:
            raise Unavailable(f"{device} did not grow to {required} bytes within {timeout:.0f} s")
        time.sleep(0.05)
