"""The storage-node interface every backend implements (kernel/LVM, SPDK) and that the
target agent serves over gRPC, so the controller has one code path: local or remote.

Every call has ensure-semantics: repeating it converges on the same state. Failures
are the typed errors of sluice_common.errors, never bare exceptions.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence

from nvme_target.changes import ChangeFeed
from nvme_target.dhchap import HostCredentials
from nvme_target.model import Capacity, Export, GroupSnapshot, Health, IoReport, Portal, QoS, Snapshot, Source, Volume
from nvme_target.pointers import NamePointers
from sluice_common.errors import FailedPrecondition, NotFound


def page(items: Iterable, key, start_after: str = "", limit: int = 0) -> list:
    """`items` (sorted by `key`) after `start_after`, at most `limit` (0: all)."""
    out = [i for i in items if key(i) > start_after] if start_after else list(items)
    return out[:limit] if limit > 0 else out


def only(exports: Iterable[Export], volume_ids: Collection[str] | None) -> list[Export]:
    """The exports of `volume_ids` (all when None)."""
    wanted = None if volume_ids is None else set(volume_ids)
    return [x for x in exports if wanted is None or x.volume_id in wanted]


class Backend(abc.ABC):
    protection = None  # latency protection's loop when one is attached (agent/protection.py: attach)
    changes: ChangeFeed  # bumped by every set_qos and condition change; each backend creates its own
    pointers: NamePointers  # the names this target is home to, placed elsewhere; durable, per backend

    # ----------------------------------------------------------------- volumes
    @abc.abstractmethod
    def create_volume(self, name: str, size_bytes: int, metadata: Mapping[str, str] | None = None,
                      source: Source | None = None) -> Volume:
        """Create a thin volume (empty, or an instant space-sharing clone of `source`).
        The size is rounded up to the backend's allocation unit. The same name with the
        same (rounded) size, metadata and source returns the existing volume; anything
        else under that name raises AlreadyExists. NoSpace past the overcommit limit."""

    @abc.abstractmethod
    def get_volume(self, volume_id: str) -> Volume:
        """NotFound when there is no such volume."""

    @abc.abstractmethod
    def find_volume(self, name: str) -> Volume | None:
        """The volume created under this CSI name, if any."""

    @abc.abstractmethod
    def list_volumes(self, start_after: str = "", limit: int = 0) -> list[Volume]:
        """Volumes ordered by id: those whose id sorts after `start_after`, at most
        `limit` of them (0: no limit). A full walk pages with the last id seen."""

    @abc.abstractmethod
    def delete_volume(self, volume_id: str, unexport: bool = False) -> None:
        """Delete; a missing volume is not an error. An exported volume raises InUse
        unless `unexport` is set, in which case the export is removed first."""

    @abc.abstractmethod
    def expand_volume(self, volume_id: str, size_bytes: int) -> Volume:
        """Grow (never shrink: a smaller size raises InvalidArgument; equal is a no-op)."""

    @abc.abstractmethod
    def set_qos(self, volume_id: str, qos: QoS) -> Volume:
        """Replace the volume's I/O limits (the target keeps them: it is the source of
        truth nodes watch). A backend that can limit on the target applies them there
        too. Bumps `changes`. NotFound for a missing volume."""

    def watch_volumes(self, volume_ids: Sequence[str], stop: threading.Event,
                      tick: float = 1.0, decorate: Callable[[Volume], Volume] | None = None) -> Iterator[Volume]:
        """Yield each of these volumes now, then again whenever its limits, its
        condition or its dynamic ceiling change, until `stop` is set. Missing volumes are
        skipped. Waits on `changes` (bumped by set_qos, by pool fill level changes and by
        the agent's protection loop), never polls storage. `decorate` adds what the
        backend does not know (the agent's dynamic ceiling)."""
        sent: dict[str, tuple] = {}
        if decorate is None and self.protection is not None:
            decorate = self.protection.decorate
        seen = -1
        while not stop.is_set():
            version = self.changes.version if seen < 0 else self.changes.wait(seen, tick)
            if version == seen:
                continue
            seen = version
            for volume_id in volume_ids:
                try:
                    vol = self.get_volume(volume_id)
                except NotFound:
                    continue
                if decorate is not None:
                    vol = decorate(vol)
                if sent.get(volume_id) != (vol.qos, vol.condition, vol.ceiling):
                    sent[volume_id] = (vol.qos, vol.condition, vol.ceiling)
                    yield vol

    def report_io(self, host_nqn: str, reports: Mapping[str, IoReport]) -> None:
        """Latency protection: a node's measurements of its published volumes (backend
        ids), for the control loop attached as `protection` (nvme_target/agent/protection.py:
        the agent's, or the all-in-one driver's); without one they are ignored."""
        if self.protection is not None:
            self.protection.report(host_nqn, reports)

    def apply_ceiling(self, volume_id: str, ceiling: QoS | None) -> None:  # noqa: B027
        """Enforce a dynamic ceiling (None: none) on the target too, where the backend
        can (SPDK); the static limits stay as stored. Nodes always enforce it in io.max."""

    # -------------------------------------------------------------- name homes
    def find_name(self, name: str) -> tuple[Volume | None, tuple[str, ...]]:
        """The volume created here under `name`, and the targets that this target, as
        the name's home, was told it was placed on elsewhere (nvme_target/pointers.py)."""
        return self.find_volume(name), self.pointers.get(name)

    def point_names(self, pointers: Mapping[str, str]) -> None:
        """Record durably that each name (homed here) is placed on that target id."""
        self.pointers.add(pointers)

    def resync(self) -> None:
        """Rebuild the in-memory index from the storage itself, so anything changed
        behind the agent's back shows from the next call. Nothing kept: nothing to do."""
        return None

    # --------------------------------------------------------------- snapshots
    @abc.abstractmethod
    def create_snapshot(self, name: str, source_volume_id: str) -> Snapshot:
        """A read-only, crash-consistent, instant snapshot. Same name + same source
        returns it again; same name + other source raises AlreadyExists."""

    @abc.abstractmethod
    def get_snapshot(self, snapshot_id: str) -> Snapshot: ...

    @abc.abstractmethod
    def find_snapshot(self, name: str) -> Snapshot | None: ...

    @abc.abstractmethod
    def list_snapshots(self, source_volume_id: str | None = None) -> list[Snapshot]: ...

    @abc.abstractmethod
    def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete; missing is not an error. InUse when volumes still depend on it."""

    # --------------------------------------------------------- group snapshots
    def create_group_snapshot(self, name: str, source_volume_ids: Sequence[str]) -> GroupSnapshot:
        """Snapshot every volume at one instant (nvme_target/groups.py): crash-consistent
        as a set. Same name + same volumes returns it again; other volumes raise
        AlreadyExists. Member snapshots are ordinary snapshots (get/list/clone) that
        carry the group id. A backend that cannot quiesce its members together refuses."""
        raise FailedPrecondition(f"{type(self).__name__} does not take group snapshots")

    def get_group_snapshot(self, group_id: str) -> GroupSnapshot:
        """NotFound when there is no such group."""
        raise NotFound(f"group snapshot {group_id} not found")

    def delete_group_snapshot(self, group_id: str) -> None:
        """Delete every member; a missing group is not an error."""
        return None  # a backend that takes no group snapshots has none to delete

    # ---------------------------------------------------------------- capacity
    @abc.abstractmethod
    def capacity(self) -> Capacity: ...

    # ----------------------------------------------------------------- exports
    @abc.abstractmethod
    def portals(self) -> tuple[Portal, ...]:
        """The NVMe/TCP addresses volumes are exported on."""

    @abc.abstractmethod
    def export_volume(self, volume_id: str, hosts: Iterable[str] = ()) -> Export:
        """Export on every portal to exactly `hosts` (no host may connect otherwise)."""

    @abc.abstractmethod
    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False, auth: str = "none") -> Export:
        """Allow one more host; exports the volume first if it is not exported. The
        target remembers whether this host's publication is read-only
        (Export.readonly_hosts; adding the host again replaces the flag), so the
        controller can tell an incompatible republish. `auth` (nvme_target/dhchap.py
        MODES): the host must authenticate with DH-HMAC-CHAP keys made now (replacing
        any it had); a target that cannot raises FailedPrecondition, changing nothing."""

    @abc.abstractmethod
    def host_credentials(self, volume_id: str, host_nqn: str) -> HostCredentials:
        """The secrets `host_nqn` connects to this volume with (mode "none": none).
        NotFound when the volume is not exported to that host."""

    @abc.abstractmethod
    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        """Disallow a host; a host that is not allowed, or a volume that is not
        exported, is not an error (returns the export, or None)."""

    @abc.abstractmethod
    def unexport_volume(self, volume_id: str) -> None:
        """Remove the export; not exported is not an error."""

    @abc.abstractmethod
    def get_export(self, volume_id: str) -> Export | None: ...

    @abc.abstractmethod
    def list_exports(self, volume_ids: Collection[str] | None = None) -> list[Export]:
        """Exports ordered by volume id; only those of `volume_ids` when given."""

    # --------------------------------------------------------------- lifecycle
    @abc.abstractmethod
    def health(self) -> Health:
        """Ready when the storage and the NVMe target are usable."""
