"""Staging records: what NodeStageVolume set up, so NodeUnstageVolume and a restarted
plugin know what to undo. The record lives beside the staging path (its own file,
written atomically); an index in the plugin's state directory lets a restarted plugin
find every record without knowing kubelet's layout."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import structlog

from nvme_target.model import QoS
from sluice_common import statefile

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class StagingRecord:
    volume_id: str
    staging_path: str
    subnqn: str
    ns_uuid: str
    portals: str
    access_type: str          # "block" or "mount"
    fs_type: str = ""
    read_only: bool = False   # a read-only use: the device is read-only, the filesystem mounted ro
    context: dict = field(default_factory=dict)     # the volume context (nvme.*, ...)
    publications: tuple[str, ...] = ()              # target paths published from this staging
    pods: dict = field(default_factory=dict)        # target path -> pod UID (podInfoOnMount)
    qos: dict = field(default_factory=dict)         # the limits to enforce (qos.* params form)
    mount_flags: tuple[str, ...] = ()               # the capability's (checked) mount flags
    diskseq: int = 0                                # the staged disk's diskseq (0: unknown)
    auth: str = "none"                              # DH-HMAC-CHAP mode (the secrets are never kept)

    def with_publication(self, target: str, pod_uid: str = "") -> StagingRecord:
        pods = {**self.pods, target: pod_uid} if pod_uid else {k: v for k, v in self.pods.items() if k != target}
        return replace(self, publications=tuple(sorted({*self.publications, target})), pods=pods)

    def without_publication(self, target: str) -> StagingRecord:
        return replace(self, publications=tuple(p for p in self.publications if p != target),
                       pods={k: v for k, v in self.pods.items() if k != target})

    @property
    def limits(self) -> QoS:
        return QoS.from_params(self.qos)

    def pod_uids(self) -> set[str]:
        return {uid for path, uid in self.pods.items() if uid and path in self.publications}


def record_path(staging_path: str) -> Path:
    path = Path(staging_path)
    return path.parent / f"{path.name}.sluice.json"


# a folder changed this recently may change again within the same timestamp tick, unseen
RACY_NS = 2_000_000_000


class StagingStore:
    """The records, found through an index folder in the plugin's state directory.

    all() is asked every few seconds by background work (limits sync, I/O reporter,
    metrics): it re-reads the records only when the index folder's mtime moved. Every
    save renames a file into that folder and every removal unlinks one, so the mtime moves
    with every change, from any process; a folder changed within the last RACY_NS is not
    trusted (a second change in the same clock tick would leave the mtime where it was)."""

    def __init__(self, state_dir: Path) -> None:
        self.index = state_dir / "staged"
        self._cache_lock = threading.Lock()
        self._cached: tuple[int, list[StagingRecord]] | None = None

    def stamp(self) -> int | None:
        """The index folder's mtime in ns (0: no folder yet); None when too recent to trust."""
        try:
            mtime = self.index.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
        return None if time.time_ns() - mtime < RACY_NS else mtime

    def save(self, record: StagingRecord) -> None:
        data = asdict(record)
        data["publications"] = list(record.publications)
        data["mount_flags"] = list(record.mount_flags)
        statefile.write_json(record_path(record.staging_path), data)
        statefile.write_json(self._index_file(record.volume_id), {"staging_path": record.staging_path})

    def load(self, staging_path: str) -> StagingRecord | None:
        data = statefile.read_json(record_path(staging_path))
        if data is None:
            return None
        data["publications"] = tuple(data.get("publications", ()))
        data["mount_flags"] = tuple(data.get("mount_flags", ()))
        return StagingRecord(**data)

    def find(self, volume_id: str) -> StagingRecord | None:
        entry = statefile.read_json(self._index_file(volume_id))
        return self.load(entry["staging_path"]) if entry else None

    def remove(self, record: StagingRecord) -> None:
        record_path(record.staging_path).unlink(missing_ok=True)
        self._index_file(record.volume_id).unlink(missing_ok=True)

    def remove_at(self, staging_path: str, volume_id: str) -> None:
        """Remove whatever record is at this staging path and the volume's index entry."""
        record_path(staging_path).unlink(missing_ok=True)
        self._index_file(volume_id).unlink(missing_ok=True)

    def all(self) -> list[StagingRecord]:
        stamp = self.stamp()  # before reading: a change while reading moves it for next time
        with self._cache_lock:
            if stamp is not None and self._cached is not None and self._cached[0] == stamp:
                return list(self._cached[1])
        records = self._read_all()
        if stamp is not None:
            with self._cache_lock:
                self._cached = (stamp, records)
        return list(records)

    def _read_all(self) -> list[StagingRecord]:
        if not self.index.is_dir():
            return []
        records = []
        for entry in sorted(self.index.glob("*.json")):
            try:
                pointer = statefile.read_json(entry)
                record = self.load(pointer["staging_path"]) if pointer else None
            except (ValueError, KeyError, TypeError) as exc:  # one damaged file must not hide the others
                log.warning("unreadable staging record skipped", index=str(entry), error=str(exc))
                continue
            if record is not None:
                records.append(record)
        return records

    def _index_file(self, volume_id: str) -> Path:
        return self.index / (hashlib.sha256(volume_id.encode()).hexdigest()[:32] + ".json")
