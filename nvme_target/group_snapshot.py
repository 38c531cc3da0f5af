"""Group snapshots on the kernel backend: thin LVM snapshots of several volumes cut
behind one nvmet ANA fence (the algorithm is nvme_target/groups.py).

The fence. Every Sluice namespace lives in nvmet's ANA group 1. To fence a set, the
members' namespaces move to a group of their own (FENCE_GROUP) on every port, and that
group's state is set to `inaccessible`: nvmet answers every new command to them with an
ANA "inaccessible" status, and the hosts' NVMe multipath holds the I/O in its requeue
list (no error reaches the application, no reconnect). Writes accepted before the fence
complete as usual. Then each member gets its thin snapshot (`lvcreate -s`, which
suspends the origin itself and so drains anything still in flight) and, once it has
one, its namespace goes back to group 1: nvmet sends an ANA change event and its hosts
resend the held I/O. A member released early cannot break the set: the members still
fenced accept nothing that could depend on its new writes until they are snapshotted.

Why not `dmsetup suspend` on the origins: lvcreate -s on an origin that is already
suspended resumes it ("Attempted to decrement suspended device counter below zero") and
leaves the thin pool's transaction id behind LVM's metadata, after which LVM refuses
every thin create in the pool (seen in the lab on LVM 2.03.16, Debian 12).

What it guarantees: no write that any member's snapshot holds was issued after a write
another member's snapshot lacks had completed. How long I/O pauses: for the k-th member
(in volume id order) from the fence to its own snapshot, about k `lvcreate -s`; the last
one waits for all (measured in tests/lab/test_group_snapshots.py).
A fence left up by an agent that died is lifted when the agent starts (lift_leftovers).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog

from nvme_target import lvtags, naming
from nvme_target.lv_view import LvView
from nvme_target.lvm import Lvm
from nvme_target.model import Snapshot
from nvme_target.nvmet import Nvmet
from sluice_common.errors import BackendFailure, SluiceError

log = structlog.get_logger(__name__)
# Sluice's namespaces live in ANA group 1; a fence moves members to this one. Not 128
# (nvmet's maximum): Linux 6.1 stores 128 as group 0 (array_index_nospec), unfenced.
FENCE_GROUP = "64"
HOME_GROUP = "1"
NSID = "1"


class AnaFence:
    """Hold I/O to some subsystems' namespaces with an nvmet ANA group.

    ANA groups are per port: the fence touches only this agent's own ports (`port_ids`),
    so agents that share a kernel (one port each) never lift each other's fence."""

    def __init__(self, nvmet: Nvmet, port_ids: Callable[[], Iterable[int]]) -> None:
        self.nvmet = nvmet
        self.port_ids = port_ids
        self._lock = threading.Lock()  # one fence at a time: they share FENCE_GROUP

    @contextmanager
    def hold(self, nqns: Sequence[str]) -> Iterator[Callable[[str], None]]:
        """Fence every namespace of `nqns` at once; yield `release(nqn)`, which lifts the
        fence for one member (once its snapshot is cut); lift it for all on exit."""
        with self._lock:
            namespaces = {nqn: ns for nqn in nqns if (ns := self._namespace(nqn)) is not None}
            groups = self._groups()
            started = time.monotonic()
            try:
                for group in groups:
                    _mkdir(group)
                    _write(group / "ana_state", "optimized")
                for ns in namespaces.values():
                    _write(ns / "ana_grpid", FENCE_GROUP)
                started = time.monotonic()
                for group in groups:
                    _write(group / "ana_state", "inaccessible")
                log.info("group fence up", namespaces=len(namespaces), ports=len(groups))
                yield lambda nqn: self._release(namespaces.get(nqn), started)
            finally:
                self._lift(groups, list(namespaces.values()))
                log.info("group fence lifted", pause_ms=round(1000 * (time.monotonic() - started)))

    def _release(self, ns: Path | None, started: float) -> None:
        if ns is not None:
            _write(ns / "ana_grpid", HOME_GROUP)  # its hosts get an ANA change event and resend
            log.info("group member released", namespace=str(ns.parent.parent.name),
                     pause_ms=round(1000 * (time.monotonic() - started)))

    def lift_leftovers(self, nqns: Iterable[str]) -> None:
        """After a crash: lift a fence nobody will lift (hosts would hold I/O forever),
        on this agent's ports and for its own subsystems (`nqns`)."""
        groups = [g for g in self._groups() if g.is_dir()]
        namespaces = [ns for nqn in nqns if (ns := self._namespace(nqn)) is not None
                      and _read(ns / "ana_grpid") == FENCE_GROUP]
        if groups or namespaces:
            log.warning("lifting a group fence left by an earlier run", namespaces=len(namespaces))
            self._lift(groups, namespaces)

    def _groups(self) -> list[Path]:
        ports = self.nvmet.root / "ports"
        return [ports / str(pid) / "ana_groups" / FENCE_GROUP for pid in self.port_ids() if (ports / str(pid)).is_dir()]

    def _namespace(self, nqn: str) -> Path | None:
        ns = self.nvmet.root / "subsystems" / nqn / "namespaces" / NSID
        return ns if ns.is_dir() else None  # not exported: no host can write to it

    def _lift(self, groups: list[Path], namespaces: list[Path]) -> None:
        """Every step is tried whatever the others do: a namespace left fenced would
        hold its hosts' I/O."""
        failed = []
        steps = ([(g / "ana_state", "optimized") for g in groups if g.is_dir()]
                 + [(ns / "ana_grpid", HOME_GROUP) for ns in namespaces])
        for path, value in steps:
            try:
                _write(path, value)
            except (OSError, SluiceError) as exc:
                failed.append(f"{path}: {exc}")
        for group in groups:
            try:
                group.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append(f"{group}: {exc}")
        if failed:
            log.error("group fence not fully lifted", failures=failed)


class LvmGroups:
    """nvme_target.groups.GroupStore over LVM tags and the ANA fence."""

    def __init__(self, lvm: Lvm, view: LvView, lock: threading.Lock, fence: AnaFence) -> None:
        self.lvm, self.view, self.lock, self.ana = lvm, view, lock, fence

    def group_lock(self) -> threading.Lock:
        return self.lock

    def members(self, group_id: str) -> list[tuple[Snapshot, int]]:
        out = []
        for lv in self.view.fresh().values():
            group, snap = lvtags.group_of(lv), lvtags.to_snapshot(lv)
            if group is not None and snap is not None and group[0] == group_id:
                out.append((snap, group[1]))
        return out

    def has_volume(self, volume_id: str) -> bool:
        """From the agent's view (members() just read LVM afresh): one `lvs` per group, not per member."""
        return lvtags.to_volume(self.view.current().get(volume_id)) is not None

    @contextmanager
    def fence(self, volume_ids: Sequence[str]) -> Iterator[Callable[[str], None]]:
        with self.ana.hold([naming.subsystem_nqn(v) for v in volume_ids]) as release:
            yield lambda volume_id: release(naming.subsystem_nqn(volume_id))

    def take(self, member_name: str, snapshot_id: str, volume_id: str, group_id: str, size: int) -> None:
        tags = [*lvtags.snapshot_tags(member_name, volume_id), lvtags.group_tag(group_id, size)]
        try:
            self.lvm.snapshot(volume_id, snapshot_id, tags, writable=False)
        finally:
            self.view.invalidate()  # after the change: a read taken meanwhile must not stay cached

    def drop(self, snapshot_id: str) -> None:
        if lvtags.to_snapshot(self.view.fresh().get(snapshot_id)) is not None:
            self.lvm.remove(snapshot_id)
            self.view.removed(snapshot_id)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir()
    except FileExistsError:
        pass
    except OSError as exc:
        raise _failure("mkdir", path, exc) from None


def _write(path: Path, value: str) -> None:
    if _read(path) == value:
        return
    try:
        path.write_text(value)
    except OSError as exc:
        raise _failure("write", path, exc) from None


def _read(path: Path) -> str:
    return path.read_text().strip()


def _failure(op: str, path: Path, exc: OSError) -> SluiceError:
    return BackendFailure(f"configfs {op} {path} failed: {exc.strerror}", errno=exc.errno)
