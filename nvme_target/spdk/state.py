"""What Sluice keeps about an SPDK target that SPDK does not: each volume's CSI name,
metadata, source and limits; each snapshot's name, origin and time; the desired
exports (host lists); and retired snapshots waiting for their clones to go. One JSON
file, rewritten atomically on every change; it is the desired state replayed into a
restarted nvmf_tgt."""

from __future__ import annotations

import threading
from pathlib import Path

from sluice_common import statefile


class SpdkState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        data = statefile.read_json(path) or {}
        self.volumes: dict[str, dict] = data.get("volumes", {})
        self.snapshots: dict[str, dict] = data.get("snapshots", {})
        self.exports: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in data.get("exports", {}).items()}
        self.readonly: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in data.get("readonly", {}).items()}
        self.retired: list[str] = data.get("retired", [])

    def put_volume(self, vol_id: str, record: dict) -> None:
        self._change(lambda: self.volumes.__setitem__(vol_id, record))

    def drop_volume(self, vol_id: str) -> None:
        self._change(lambda: self.volumes.pop(vol_id, None))

    def put_snapshot(self, snap_id: str, record: dict) -> None:
        self._change(lambda: self.snapshots.__setitem__(snap_id, record))

    def drop_snapshot(self, snap_id: str) -> None:
        self._change(lambda: self.snapshots.pop(snap_id, None))

    def put_export(self, vol_id: str, hosts: frozenset[str], readonly: frozenset[str] | None = None) -> None:
        """The allowed hosts, and which of them are read-only (None: keep the flags of
        the hosts that stay)."""
        ro = (self.readonly.get(vol_id, frozenset()) if readonly is None else readonly) & hosts

        def change() -> None:
            self.exports[vol_id] = frozenset(hosts)
            if ro:
                self.readonly[vol_id] = ro
            else:
                self.readonly.pop(vol_id, None)
        self._change(change)

    def drop_export(self, vol_id: str) -> None:
        self._change(lambda: (self.exports.pop(vol_id, None), self.readonly.pop(vol_id, None)))

    def retire(self, lvol: str) -> None:
        self._change(lambda: self.retired.append(lvol) if lvol not in self.retired else None)

    def unretire(self, lvol: str) -> None:
        self._change(lambda: self.retired.remove(lvol) if lvol in self.retired else None)

    def _change(self, change) -> None:
        with self._lock:
            change()
            statefile.write_json(self.path, {
                "volumes": self.volumes, "snapshots": self.snapshots, "retired": self.retired,
                "exports": {k: sorted(v) for k, v in self.exports.items()},
                "readonly": {k: sorted(v) for k, v in self.readonly.items()}})
