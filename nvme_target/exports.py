"""The desired exports of a storage node, saved atomically so they survive a reboot.

configfs (and SPDK) forget every export when the node restarts; this file remembers
which volumes were exported to which hosts. The agent re-applies it before it serves.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sluice_common import statefile

VERSION = 1


class ExportStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self) -> dict[str, frozenset[str]]:
        """The allowed hosts of every exported volume."""
        return {vol: frozenset(entry["hosts"]) for vol, entry in self._entries().items()}

    def readonly(self, volume_id: str) -> frozenset[str]:
        """The hosts this volume was published to read-only."""
        return frozenset(self._entries().get(volume_id, {}).get("readonly", ()))

    def put(self, volume_id: str, hosts: frozenset[str], readonly: frozenset[str] | None = None) -> None:
        """Record the allowed hosts (and which of them are read-only; None keeps the
        read-only flags of the hosts that stay)."""
        with self._lock:
            entries = self._entries()
            old = entries.get(volume_id, {})
            ro = frozenset(old.get("readonly", ())) if readonly is None else readonly
            entry = {"hosts": sorted(hosts)}
            if ro & hosts:
                entry["readonly"] = sorted(ro & hosts)
            if old == entry:
                return
            entries[volume_id] = entry
            self._save(entries)

    def drop(self, volume_id: str) -> None:
        with self._lock:
            entries = self._entries()
            if entries.pop(volume_id, None) is not None:
                self._save(entries)

    def _entries(self) -> dict[str, dict]:
        data = statefile.read_json(self.path, default={"version": VERSION, "exports": {}})
        return data["exports"]

    def _save(self, entries: dict[str, dict]) -> None:
        statefile.write_json(self.path, {"version": VERSION, "exports": dict(sorted(entries.items()))})
