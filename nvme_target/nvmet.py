"""Kernel nvmet through configfs, modelled on nvmetcli: one class per kernel object
(Subsystem, Namespace, Port, Host), each looked up or created in a mode:

    "lookup" — must exist (NotFound otherwise)
    "create" — must not exist (AlreadyExists otherwise)
    "ensure" — make it exist; a no-op when it already does (what a retry needs)

delete() is recursive and a no-op when the object is already gone.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Literal

from nvme_target import faults
from sluice_common.errors import AlreadyExists, BackendFailure, NotFound, Unavailable

Mode = Literal["lookup", "create", "ensure"]
DEFAULT_ROOT = Path("/sys/kernel/config/nvmet")


class _Node:
    kind = "object"

    def __init__(self, path: Path, mode: Mode) -> None:
        self.path = path
        exists = path.is_dir()
        if mode == "lookup" and not exists:
            raise NotFound(f"nvmet {self.kind} {path.name} not found")
        if mode == "create" and exists:
            raise AlreadyExists(f"nvmet {self.kind} {path.name} already exists")
        if not exists:
            try:
                os.mkdir(path)
            except FileExistsError:
                if mode == "create":
                    raise AlreadyExists(f"nvmet {self.kind} {path.name} already exists") from None
            except OSError as exc:
                raise BackendFailure(f"configfs mkdir {path} failed: {os.strerror(exc.errno)}",
                                     errno=exc.errno) from None

    @property
    def name(self) -> str:
        return self.path.name

    def get(self, attr: str) -> str:
        return (self.path / attr).read_text().strip()

    def set(self, attr: str, value: str) -> None:
        """Write an attribute unless it already holds that value (configfs refuses some
        rewrites, e.g. device_path of an enabled namespace)."""
        if self.get(attr) != value:  # the error names the attribute, never the value (it may be a key)
            try:
                (self.path / attr).write_text(value)
            except OSError as exc:
                raise BackendFailure(f"configfs write {self.path / attr} failed: {os.strerror(exc.errno)}",
                                     errno=exc.errno) from None


def _configfs(op, *args):
    try:
        return op(*args)
    except OSError as exc:
        raise BackendFailure(f"configfs {op.__name__} {args[0]} failed: {os.strerror(exc.errno)}",
                             errno=exc.errno) from None


class Host(_Node):
    kind = "host"

    def supports_auth(self) -> bool:
        """The kernel has NVMe target authentication (CONFIG_NVME_TARGET_AUTH, 6.x)."""
        return (self.path / "dhchap_key").exists()

    def set_auth(self, secret: str, ctrl_secret: str, hash_name: str, dhgroup: str) -> None:
        """The host's DH-HMAC-CHAP key (and the controller's, for bidirectional). Errors
        name the attribute, never the value."""
        self.set("dhchap_hash", hash_name)
        self.set("dhchap_dhgroup", dhgroup)
        self.set("dhchap_key", secret)
        if ctrl_secret:
            self.set("dhchap_ctrl_key", ctrl_secret)


class Namespace(_Node):
    kind = "namespace"

    @property
    def enabled(self) -> bool:
        return self.get("enable") == "1"

    def configure(self, device_path: str, uuid: str, nguid: str) -> None:
        """Point the namespace at a block device with fixed identities, and enable it.
        A namespace already configured that way is left alone."""
        wanted = {"device_path": device_path, "device_uuid": uuid, "device_nguid": nguid}
        if self.enabled and all(self.get(k) == v for k, v in wanted.items()):
            return
        if self.enabled:
            self.set("enable", "0")
        for attr, value in wanted.items():
            self.set(attr, value)
        self.set("enable", "1")

    def drain(self) -> None:
        """Disable and re-enable: the kernel waits for every request in flight on the
        namespace to complete before a disable returns."""
        if self.enabled:
            self.set("enable", "0")
            self.set("enable", "1")

    def revalidate_size(self) -> None:
        """Tell connected hosts the backing device grew (a namespace-changed event)."""
        _configfs((self.path / "revalidate_size").write_text, "1")

    def delete(self) -> None:
        if self.path.is_dir():
            if self.enabled:
                self.set("enable", "0")
            _rmdir(self.path)


class Subsystem(_Node):
    kind = "subsystem"

    def namespace(self, nsid: int, mode: Mode = "ensure") -> Namespace:
        return Namespace(self.path / "namespaces" / str(nsid), mode)

    def namespaces(self) -> list[Namespace]:
        return [Namespace(p, "lookup") for p in sorted((self.path / "namespaces").iterdir())]

    def allowed_hosts(self) -> set[str]:
        return {p.name for p in (self.path / "allowed_hosts").iterdir()}

    def allow_host(self, host: Host) -> None:
        link = self.path / "allowed_hosts" / host.name
        if not link.is_symlink():
            _configfs(os.symlink, host.path, link)

    def disallow_host(self, nqn: str) -> None:
        _unlink(self.path / "allowed_hosts" / nqn)

    def delete(self, ports: list[Port]) -> None:
        """Unlink from `ports`, drop namespaces and host links, remove the subsystem."""
        if not self.path.is_dir():
            return
        for port in ports:
            port.unlink_subsystem(self.name)
        faults.point("unexport.after-unlink")
        for ns in self.namespaces():
            ns.delete()
        for nqn in self.allowed_hosts():
            self.disallow_host(nqn)
        _rmdir(self.path)


class Port(_Node):
    kind = "port"

    def configure(self, traddr: str, trsvcid: str, adrfam: str) -> None:
        wanted = {"addr_trtype": "tcp", "addr_adrfam": adrfam, "addr_traddr": traddr,
                  "addr_trsvcid": trsvcid}
        if all(self.get(k) == v for k, v in wanted.items()):
            return
        linked = self.subsystems()  # addresses can only change while nothing is linked
        for nqn in linked:
            self.unlink_subsystem(nqn)
        for attr, value in wanted.items():
            self.set(attr, value)
        for nqn in linked:
            _configfs(os.symlink, self.path.parent.parent / "subsystems" / nqn, self.path / "subsystems" / nqn)

    def subsystems(self) -> list[str]:
        return sorted(p.name for p in (self.path / "subsystems").iterdir())

    def link_subsystem(self, subsystem: Subsystem) -> None:
        link = self.path / "subsystems" / subsystem.name
        if not link.is_symlink():
            _configfs(os.symlink, subsystem.path, link)

    def unlink_subsystem(self, nqn: str) -> None:
        _unlink(self.path / "subsystems" / nqn)


class Nvmet:
    """The nvmet configfs tree."""

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = root

    def available(self) -> bool:
        return (self.root / "subsystems").is_dir()

    def require(self) -> None:
        if not self.available():
            raise Unavailable(f"nvmet configfs is not mounted at {self.root} (modprobe nvmet?)")

    def subsystem(self, nqn: str, mode: Mode = "lookup") -> Subsystem:
        return Subsystem(self.root / "subsystems" / nqn, mode)

    def subsystems(self) -> list[str]:
        return sorted(p.name for p in (self.root / "subsystems").iterdir())

    def host(self, nqn: str, mode: Mode = "ensure") -> Host:
        return Host(self.root / "hosts" / nqn, mode)

    def port(self, port_id: int, mode: Mode = "ensure") -> Port:
        return Port(self.root / "ports" / str(port_id), mode)

    def ports(self) -> list[Port]:
        return [Port(p, "lookup") for p in sorted((self.root / "ports").iterdir())]

    def prune_host(self, nqn: str) -> None:
        """Remove a host entry no subsystem refers to any more."""
        for sub in self.subsystems():
            if (self.root / "subsystems" / sub / "allowed_hosts" / nqn).is_symlink():
                return
        if (self.root / "hosts" / nqn).is_dir():
            _rmdir(self.root / "hosts" / nqn)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise BackendFailure(f"configfs unlink {path} failed: {os.strerror(exc.errno)}") from None


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise BackendFailure(f"configfs {path} is busy", errno=exc.errno) from None
        raise BackendFailure(f"configfs rmdir {path} failed: {os.strerror(exc.errno)}") from None
