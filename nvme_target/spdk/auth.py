"""DH-HMAC-CHAP keys on the SPDK backend: one host secret (and a controller secret for
bidirectional) per (volume, host), made at every publish, kept in the desired state
(`<state-dir>/dhchap.json`, 0600) and handed to nvmf_tgt through its keyring: each
secret is a 0600 file under `<state-dir>/keys/` (SPDK's keyring_file refuses any other
mode) added with keyring_file_add_key, and nvmf_subsystem_add_host /
nvmf_subsystem_set_keys name the keys. nvmf_tgt forgets its keyring when it restarts;
the replay adds the keys again before the hosts. Key names carry a digest of the secret,
never the secret, so a new secret is a new key and a replaced one can be dropped
(keyring_file_remove_key leaves a key a subsystem still holds working until it lets go).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nvme_target.dhchap import HostCredentials, SecretStore
from nvme_target.spdk.rpc import SpdkRpc
from sluice_common.errors import AlreadyExists, NotFound

PREFIX = "sluice-"


def key_name(secret: str) -> str:
    return PREFIX + hashlib.sha256(secret.encode()).hexdigest()[:24]


class SpdkKeys:
    def __init__(self, rpc: SpdkRpc, state_dir: Path) -> None:
        self.rpc = rpc
        self.dir = state_dir / "keys"
        self.secrets = SecretStore(state_dir / "dhchap.json")

    def wanted(self, vol_id: str, host_nqn: str, held: set[str]) -> dict[str, str]:
        """The key names this host must present for this volume (nvmf_subsystem_add_host's
        dhchap_key / dhchap_ctrlr_key); {} for none. Adds the keys SPDK does not hold
        (`held`: its keyring's names, updated)."""
        creds = self.secrets.get(vol_id, host_nqn) or HostCredentials()
        names = {}
        if creds.secret:
            names["dhchap_key"] = self._ensure(creds.secret, held)
        if creds.ctrl_secret:
            names["dhchap_ctrlr_key"] = self._ensure(creds.ctrl_secret, held)
        return names

    def held(self) -> set[str]:
        """The names in nvmf_tgt's keyring (keys removed but still held by a host excluded)."""
        return {k["name"] for k in self.rpc.call("keyring_get_keys") if not k.get("removed")}

    def prune(self) -> None:
        """Drop Sluice's keys no (volume, host) wants any more, from SPDK and from disk."""
        keep = {key_name(s) for hosts in self.secrets.all().values() for c in hosts.values()
                for s in (c.secret, c.ctrl_secret) if s}
        for name in sorted(self.held()):
            if name.startswith(PREFIX) and name not in keep:
                try:
                    self.rpc.call("keyring_file_remove_key", name=name)
                except NotFound:
                    pass
        if self.dir.is_dir():
            for path in self.dir.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)

    def _ensure(self, secret: str, held: set[str]) -> str:
        name = key_name(secret)
        path = self.dir / name
        if not path.exists():
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.dir / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secret)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        if name not in held:
            try:
                self.rpc.call("keyring_file_add_key", name=name, path=str(path.resolve()))
            except AlreadyExists:
                pass  # added since we looked
            held.add(name)
        return name
