"""NVMe in-band authentication (DH-HMAC-CHAP) secrets: modes, generation, the store.

A volume is published to a host with one of MODES. For "unidirectional" the target
holds a host secret the host must prove it knows; "bidirectional" adds a controller
secret the target must prove it knows to the host. Secrets are random 256-bit keys in
the NVMe "DHHC-1" representation (untransformed key + CRC-32, base64), as the kernel
(`dhchap_secret=` / configfs `dhchap_key`) and SPDK's keyring take them.

The store is part of the target's desired state: `<state-dir>/dhchap.json`, mode 0600
(statefile writes every file 0600), replayed into configfs / SPDK after a restart.
Secrets are never logged and never part of an Export or Volume; HostCredentials hides
them from repr().
"""

from __future__ import annotations

import base64
import secrets
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from sluice_common import statefile
from sluice_common.errors import InvalidArgument

MODES = ("none", "unidirectional", "bidirectional")
HASH = "hmac(sha256)"
DHGROUP = "null"   # random 256-bit keys: no password to protect with a DH exchange on every queue
KEY_BYTES = 32
VERSION = 1


def check_mode(mode: str, field_name: str = "auth") -> str:
    if mode not in MODES:
        raise InvalidArgument(f"{field_name} must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def new_secret() -> str:
    key = secrets.token_bytes(KEY_BYTES)
    crc = zlib.crc32(key).to_bytes(4, "little")
    return f"DHHC-1:00:{base64.b64encode(key + crc).decode()}:"


def well_formed(secret: str) -> bool:
    """A DHHC-1 secret whose CRC matches (what the kernel checks before using it)."""
    parts = secret.split(":")
    if len(parts) != 4 or parts[0] != "DHHC-1" or parts[3] != "":
        return False
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except ValueError:
        return False
    key, crc = raw[:-4], raw[-4:]
    return len(key) in (32, 48, 64) and zlib.crc32(key).to_bytes(4, "little") == crc


@dataclass(frozen=True)
class HostCredentials:
    """What one host passes when it connects to one volume ("none": nothing)."""

    mode: str = "none"
    secret: str = field(default="", repr=False)       # the host's (dhchap_secret)
    ctrl_secret: str = field(default="", repr=False)  # the controller's (dhchap_ctrl_secret), bidirectional

    @classmethod
    def generate(cls, mode: str) -> HostCredentials:
        check_mode(mode)
        if mode == "none":
            return cls()
        return cls(mode, new_secret(), new_secret() if mode == "bidirectional" else "")

    def as_dict(self) -> dict[str, str]:
        return {"mode": self.mode, "secret": self.secret, "ctrl_secret": self.ctrl_secret}


class SecretStore:
    """(volume id, host NQN) -> HostCredentials, saved atomically (0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, dict]] | None = None

    def get(self, volume_id: str, host_nqn: str) -> HostCredentials | None:
        entry = self._current().get(volume_id, {}).get(host_nqn)
        return HostCredentials(**entry) if entry else None

    def of_host(self, host_nqn: str) -> dict[str, HostCredentials]:
        """volume id -> this host's credentials for it."""
        return {vol: HostCredentials(**hosts[host_nqn]) for vol, hosts in self._current().items()
                if host_nqn in hosts}

    def all(self) -> dict[str, dict[str, HostCredentials]]:
        """volume id -> host NQN -> credentials."""
        return {vol: {h: HostCredentials(**c) for h, c in hosts.items()} for vol, hosts in self._current().items()}

    def put(self, volume_id: str, host_nqn: str, creds: HostCredentials) -> None:
        with self._lock:
            entries = dict(self._current())
            hosts = dict(entries.get(volume_id, {}))
            if hosts.get(host_nqn) == creds.as_dict():
                return
            hosts[host_nqn] = creds.as_dict()
            entries[volume_id] = hosts
            self._save(entries)

    def drop(self, volume_id: str, host_nqn: str | None = None) -> None:
        """Forget one host's credentials for a volume (all hosts' when None)."""
        with self._lock:
            entries = dict(self._current())
            hosts = {h: c for h, c in entries.get(volume_id, {}).items() if host_nqn not in (None, h)}
            if hosts == entries.get(volume_id, {}):
                return
            if hosts:
                entries[volume_id] = hosts
            else:
                entries.pop(volume_id, None)
            self._save(entries)

    def _current(self) -> dict[str, dict[str, dict]]:
        cache = self._cache
        if cache is None:
            data = statefile.read_json(self.path, default={"version": VERSION, "volumes": {}})
            cache = self._cache = data["volumes"]
        return cache

    def _save(self, entries: dict[str, dict[str, dict]]) -> None:
        entries = dict(sorted(entries.items()))
        statefile.write_json(self.path, {"version": VERSION, "volumes": entries})
        self._cache = entries
