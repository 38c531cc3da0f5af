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
        data = statefile.read_json(self.path, default={"version": VERSION, "exports": {}})
        return {vol: frozenset(entry["hosts"]) for vol, entry in data["exports"].items()}

    def put(self, volume_id: str, hosts: frozenset[str]) -> None:
        with self._lock:
            exports = self.load()
            if exports.get(volume_id) == hosts:
                return
            exports[volume_id] = hosts
            self._save(exports)

    def drop(self, volume_id: str) -> None:
        with self._lock:
            exports = self.load()
            if exports.pop(volume_id, None) is not None:
                self._save(exports)

    def _save(self, exports: dict[str, frozenset[str]]) -> None:
        statefile.write_json(self.path, {
            "version": VERSION,
            "exports": {vol: {"hosts": sorted(hosts)} for vol, hosts in sorted(exports.items())},
        })
