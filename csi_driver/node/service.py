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

from csi_driver import ids
from csi_driver.capabilities import Capability, require_supported
from csi_driver.locks import InFlight
from csi_driver.node import devices, fabrics, faults, filesystems, health, mounts, plans, publishing, supervise
from csi_driver.node import readonly as ro
from csi_driver.node.hostid import HostIdentity
from csi_driver.node.limits import PodLimits
from csi_driver.node.limits_watch import LimitsWatch
from csi_driver.node.protection import Ceilings, IoReporter
from csi_driver.node.staging import StagingRecord, StagingStore
from csi_driver.targets import Targets
from nvme_target import naming
from nvme_target.dhchap import HostCredentials
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
    sync_interval: float = 2.0   # how often the limits sync looks for a reason to run (an event)
    full_sync_interval: float = 30.0  # every line re-read even with no event (someone else's write)
    report_interval: float = 0.25  # latency protection: how often volumes' I/O is reported (0: never)


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
        self.targets = targets
        self.ceilings = Ceilings()
        self.limits = PodLimits(config.cgroup_root, self.ceilings.get)
        self.watch = (LimitsWatch(targets, self._watched, self.limits_changed, self.condition_changed,
                                  self.ceiling_changed) if targets is not None else None)
        self.reporter = (IoReporter(targets, self.store.all, identity.host_nqn, self.ceilings, config.state_dir)
                         if targets is not None else None)
        self._conditions: dict[str, str] = {}  # volume id -> the target's Volume.condition ("" healthy)
        self._stopped = threading.Event()
        self._locks_lock = threading.Lock()
        self._record_locks: dict[str, threading.Lock] = {}
        self._synced: tuple | None = None  # what the last full limits sync saw (see sync_limits)
        self._synced_at = 0.0

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Re-apply every published volume's limits (a restarted plugin), then keep them:
        watch the targets for changes and re-check every few seconds for reconnects."""
        devices.INDEX.follow_udev()
        self.sync_limits()
        if self.watch is not None:
            self.watch.start()
        supervise.forever("limits-sync", self.sync_limits, self.config.sync_interval, self._stopped)
        if self.reporter is not None and self.config.report_interval > 0:
            supervise.forever("io-report", self.reporter.step, self.config.report_interval, self._stopped)

    def stop(self) -> None:
        self._stopped.set()
        if self.watch is not None:
            self.watch.close()

    def sync_limits(self) -> None:
        """Keep every published volume's pods carrying its limits, cheaply. A full pass
        (device, pod cgroup and io.max looked up again for each volume and pod) runs after a
        udev block event (a reconnect makes a new device), a changed staging record, a pass
        that skipped a busy volume, and every round on cgroup v1 (new containers need their
        own lines). Otherwise, every full_sync_interval, a verify pass re-reads only the
        io.max lines last written (someone else may have changed one); in between nothing
        is read. CSI calls and limit changes write their lines themselves."""
        seen = (devices.INDEX.generation(), self.store.stamp())
        now = time.monotonic()
        changed = seen != self._synced or None in seen or self._v1()
        if not changed and now - self._synced_at < self.config.full_sync_interval:
            return
        if self._sync_all(verify_only=not changed, stamp=seen[1]):
            self._synced, self._synced_at = seen, now
        else:
            self._synced = None  # a volume was busy: the next round runs in full again

    def _v1(self) -> bool:
        try:
            return self.limits.hierarchy.version == 1
        except SluiceError:
            return False

    def _sync_all(self, verify_only: bool = False, stamp: int | None = None) -> bool:
        """One pass over every published volume; False when one was busy (skipped).
        `verify_only`: the records and devices had not changed when the pass began (`stamp`:
        the store's then); a record changed since by a CSI call is read again."""
        complete = True
        for record in self.store.all():
            if not record.pod_uids():
                continue
            lock = self._record_lock(record.volume_id)
            if not lock.acquire(blocking=False):
                complete = False
                continue  # a CSI call is working on it; next round
            try:
                if verify_only:
                    if stamp is None or self.store.stamp() != stamp:
                        record = self.store.find(record.volume_id) or record
                    self.limits.verify(record)
                    continue
                fresh = self.store.find(record.volume_id)
                if fresh is not None:
                    self.limits.sync(fresh)
            except SluiceError as exc:
                log.warning("limits sync failed", volume_id=record.volume_id, error=str(exc))
            except Exception:  # noqa: BLE001 - one volume's surprise must not stop the others
                log.exception("limits sync failed", volume_id=record.volume_id)
            finally:
                lock.release()
        return complete

    def _watched(self) -> list[str]:
        return [r.volume_id for r in self.store.all()]

    def condition_changed(self, volume_id: str, condition: str) -> None:
        """The target's view of a staged volume ("" healthy, else why): reported by
        NodeGetVolumeStats as abnormal."""
        if self._conditions.get(volume_id, "") != condition:
            log.info("volume condition at the target", volume_id=volume_id, condition=condition or "healthy")
        self._conditions[volume_id] = condition

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

    def ceiling_changed(self, volume_id: str, ceiling: QoS | None, reason: str) -> None:
        """Latency protection: the target's dynamic ceiling for a bulk volume (None: none,
        the static caps alone). Applied to the pods' io.max at once."""
        if not self.ceilings.set(volume_id, ceiling, reason):
            return
        (log.debug if reason.startswith("increase") else log.info)(
            "dynamic ceiling", volume_id=volume_id, ceiling=ceiling.as_params() if ceiling else None,
            reason=reason or "target unreachable: static caps")
        lock = self._record_lock(volume_id)
        if not lock.acquire(timeout=30):
            self._synced = None  # the next periodic sync runs in full and applies it
            return
        try:
            record = self.store.find(volume_id)
            if record is not None:
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
        plan = plans.plan(volume_id, publish_context, staging_path, cap, volume_context)
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            before = self.store.load(staging_path)
            device = self._bring_up(plan, before.diskseq if before else 0)
            record = replace(plan, diskseq=devices.diskseq(device),
                             publications=before.publications if before else (),
                             pods=before.pods if before else {},
                             # limits the target sent since win over the (older) publish context
                             qos=before.qos if before else plan.qos)
            self.store.save(record)
            faults.step("stage:recorded")
            self.limits.sync(record)  # staged again after a reconnect: the device is new
        if self.watch is not None:
            self.watch.refresh()
        log.info("staged", volume_id=volume_id, device=device, access_type=cap.access_type,
                 read_only=plan.read_only)

    def _bring_up(self, plan: StagingRecord, staged_seq: int = 0) -> str:
        """Connect, find the namespace, make it read-only if the use is, mount it at the
        staging path (a mount left on a dead device is replaced: `staged_seq` is the
        diskseq the staging mount was made on). Rolls back its connect."""
        spec = plans.connect_spec(plan, self.identity, self.config.host_iface, self.config.host_traddr,
                                  self._credentials(plan))
        already = bool(fabrics.controllers(spec.subnqn, spec.host_nqn))
        device = self._attach(spec, plan.ns_uuid)
        faults.step("stage:connected")
        try:
            if plan.read_only:
                ro.set_device_read_only(device)
            if plan.access_type == "mount":
                self._mount_staging(plan, device, staged_seq)
            else:
                Path(plan.staging_path).mkdir(parents=True, exist_ok=True)
        except Exception:
            if not already:
                fabrics.disconnect(spec.subnqn, spec.host_nqn)
            raise
        faults.step("stage:mounted")
        return device

    def _credentials(self, plan: StagingRecord) -> HostCredentials | None:
        """The DH-HMAC-CHAP secrets this host connects with, fetched from the volume's
        target over this node's own authenticated channel (never from the publish
        context, and never written anywhere: they live only in the connect string)."""
        if self.targets is None:
            if plan.auth != "none":
                raise FailedPrecondition(f"volume {plan.volume_id} is published with nvme.auth {plan.auth}: this "
                                         "node plugin needs --targets-config to fetch its credentials")
            return None
        target_id, vol_id = ids.split_volume(plan.volume_id)
        try:
            creds = self.targets.get(target_id, f"volume {plan.volume_id}").backend.host_credentials(
                vol_id, self.identity.host_nqn)
        except SluiceError as exc:
            if plan.auth != "none":
                raise
            log.warning("credentials not fetched; connecting without", volume_id=plan.volume_id, error=str(exc))
            return None
        log.info("connect credentials fetched", volume_id=plan.volume_id, mode=creds.mode)
        return creds

    def _attach(self, spec: fabrics.ConnectSpec, ns_uuid: str) -> str:
        with devices.NamespaceWatch() as watch:
            fabrics.connect(spec)
            return watch.wait(ns_uuid, self.config.device_timeout)

    def _mount_staging(self, plan: StagingRecord, device: str, staged_seq: int = 0) -> None:
        staging_path = plan.staging_path
        Path(staging_path).mkdir(parents=True, exist_ok=True)
        mounted = mounts.at(staging_path)
        # the same MAJ:MIN may be a new disk (the old one was removed): diskseq tells them apart
        replaced = bool(staged_seq) and staged_seq != devices.diskseq(device)
        if mounted is not None and (mounted.majmin != devices.majmin(device) or replaced):
            if devices.exists(mounted.majmin) and not replaced:
                raise FailedPrecondition(f"{staging_path} is already mounted from another device")
            log.warning("staging mount is on a device that is gone: mounting the volume again",
                        volume_id=plan.volume_id, staging_path=staging_path, old=mounted.majmin)
            mounts.umount(staging_path)
            mounted = None
        if mounted is not None:
            if plan.read_only and not mounted.read_only:
                raise FailedPrecondition(f"volume {plan.volume_id} is staged read-write at {staging_path}; "
                                         "unstage it before a read-only use")
            return
        if plan.read_only:
            if not filesystems.probe(f"/dev/{device}"):
                raise FailedPrecondition(f"volume {plan.volume_id} is blank: a read-only use never formats it "
                                         "(write it once through a read-write publish first)")
        else:
            filesystems.ensure(f"/dev/{device}", plan.fs_type)
        mounts.mount(f"/dev/{device}", staging_path, plan.fs_type,
                     filesystems.mount_options(plan.fs_type, plan.mount_flags, plan.read_only))

    def _stale(self, record: StagingRecord) -> bool:
        """A mounted staging filesystem whose device is gone (the kernel dropped the
        controller after ctrl_loss_tmo): handing it out would give a pod a dead filesystem."""
        if record.access_type != "mount":
            return False
        mounted = mounts.at(record.staging_path)
        if mounted is None:
            return True
        device = devices.find_by_uuid(record.ns_uuid)
        return (device is None or devices.majmin(device) != mounted.majmin
                or bool(record.diskseq) and devices.diskseq(device) != record.diskseq)

    # --------------------------------------------------------------- unstage
    def unstage(self, volume_id: str, staging_path: str) -> None:
        """Converges from any point: without a record (a crash before it was saved) the
        connection is found by the subsystem NQN the volume id derives."""
        _require(volume_id, "volume_id")
        _require(staging_path, "staging_target_path")
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            record = self.store.load(staging_path) or self.store.find(volume_id)
            if mounts.at(staging_path) is not None:
                os.sync()
                mounts.umount(staging_path)
            faults.step("unstage:unmounted")
            for name in ro.layers_of(volume_id):
                ro.remove_layer(name)
            subnqn = record.subnqn if record is not None else _derived_nqn(volume_id)
            if record is not None and (device := devices.find_by_uuid(record.ns_uuid)) is not None:
                _flush(device)
            if subnqn:
                fabrics.disconnect(subnqn, self.identity.host_nqn)
            faults.step("unstage:disconnected")
            if record is not None:
                self.store.remove(record)
            self.store.remove_at(staging_path, volume_id)
            self._conditions.pop(volume_id, None)
        if self.watch is not None:
            self.watch.refresh()
        log.info("unstaged", volume_id=volume_id, had_record=record is not None)

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
            read_only = readonly or cap.read_only or record.read_only
            pod_uid = (volume_context or {}).get(POD_UID_KEY, "")
            self.limits.check(record, pod_uid)  # before any change: no pod cgroup, no publish
            if self._stale(record):
                log.warning("staged filesystem is dead: staging again", volume_id=volume_id)
                device = self._bring_up(record, record.diskseq)
                record = replace(record, diskseq=devices.diskseq(device))
                self.store.save(record)
                self.limits.sync(record)
            mounted_here = self._publish_mount(record, target_path, read_only)
            published = record.with_publication(target_path, pod_uid)
            self.store.save(published)
            faults.step("publish:recorded")
            try:
                if pod_uid and not self.limits.wanted(published).unlimited:
                    self.limits.apply(published, pod_uid)
            except Exception:
                self.store.save(record)
                if mounted_here:
                    self._unmount_target(volume_id, target_path)
                raise
        if pod_uid and self.watch is not None:
            self.watch.refresh()
        log.info("published", volume_id=volume_id, target_path=target_path, read_only=read_only,
                 pod_uid=pod_uid, limits=published.qos)

    def _publish_mount(self, record: StagingRecord, target_path: str, read_only: bool) -> bool:
        """Make the pod's mount with its final flags in one step (see mounts.bind); a mount
        already there with other flags or another source is replaced, never accepted."""
        existing = mounts.at(target_path)
        if existing is not None:
            if publishing.matches(record, target_path, existing, read_only):
                return False
            log.warning("target mount has the wrong flags or source: making it again",
                        volume_id=record.volume_id, target_path=target_path)
            self._unmount_target(record.volume_id, target_path)
        source = publishing.source(record, target_path, read_only)
        faults.step("publish:prepared")
        mounts.bind(source, target_path, read_only)
        faults.step("publish:mounted")
        return True

    def unpublish(self, volume_id: str, target_path: str) -> None:
        _require(volume_id, "volume_id")
        _require(target_path, "target_path")
        with self.inflight.guard(f"volume:{volume_id}"), self._record_lock(volume_id):
            self._unmount_target(volume_id, target_path)
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

    def _unmount_target(self, volume_id: str, target_path: str) -> None:
        while mounts.at(target_path) is not None:  # a stacked mount from an older plugin too
            mounts.umount(target_path)
        faults.step("unpublish:unmounted")
        ro.remove_layer(ro.layer_name(volume_id, target_path))

    # ---------------------------------------------------------- stats/expand
    def stats(self, volume_id: str, volume_path: str) -> Stats:
        _require(volume_id, "volume_id")
        _require(volume_path, "volume_path")
        record = self.store.find(volume_id)
        if record is None or not os.path.exists(volume_path):
            raise NotFound(f"volume {volume_id} is not available at {volume_path} on this node")
        abnormal, message = health.condition(record, volume_path, self.identity.host_nqn,
                                             self._conditions.get(volume_id, ""))
        if record.access_type == "block":
            device = devices.find_by_uuid(record.ns_uuid)
            size = devices.size_bytes(device) if device else 0
            return Stats((Usage(size, 0, 0, "BYTES"),), abnormal, message)
        st = os.statvfs(volume_path)
        usage = (Usage(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize,
                       (st.f_blocks - st.f_bfree) * st.f_frsize, "BYTES"),
                 Usage(st.f_files, st.f_favail, st.f_files - st.f_ffree, "INODES"))
        return Stats(usage, abnormal, message)

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


def _derived_nqn(volume_id: str) -> str:
    """The subsystem NQN every backend gives this volume (naming.export); "" when the id
    cannot be one of ours."""
    try:
        return naming.subsystem_nqn(ids.split_volume(volume_id)[1])
    except NotFound:
        return ""


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
