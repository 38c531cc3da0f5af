"""Exports of block devices through kernel nvmet: one subsystem per volume, namespace 1
with the volume's fixed UUID/NGUID, linked to every portal, open to exactly the allowed
hosts (attr_allow_any_host=0, set before any port link exists).

The desired state is written to the ExportStore so restore() can rebuild configfs after
a reboot. Ordering keeps the saved state the more restrictive one at every instant:
hosts are added to configfs before the store, and removed from the store first.

Removing a host fences it (remove_host): its live controllers are torn down too, not
only its right to connect again.

DH-HMAC-CHAP (nvme_target/dhchap.py): kernel nvmet keeps a host's keys in its host
entry (hosts/<nqn>/dhchap_key, dhchap_ctrl_key), shared by every subsystem that host
may reach. So on this backend a host's secret is per (target, host): a publish makes a
new one unless the host still has other authenticated volumes here (their controllers
reconnect with the key they were given), and the host entry goes, keys and all, with
the host's last volume.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable

import structlog

from nvme_target import dhchap, faults, naming, validate
from nvme_target.dhchap import HostCredentials, SecretStore
from nvme_target.exports import ExportStore
from nvme_target.model import Export, Portal
from nvme_target.nvmet import Nvmet, Port
from sluice_common.errors import FailedPrecondition, NotFound, SluiceError

log = structlog.get_logger(__name__)
NSID = 1


def port_id(portal: Portal) -> int:
    """A stable nvmet port id (1..65000) per address, so several agents can share a kernel."""
    return zlib.crc32(f"{portal.traddr}:{portal.trsvcid}".encode()) % 65000 + 1


class NvmetExporter:
    def __init__(self, nvmet: Nvmet, store: ExportStore, portals: tuple[Portal, ...],
                 device_path: Callable[[str], str], secrets: SecretStore | None = None) -> None:
        self.nvmet = nvmet
        self.store = store
        self.secrets = secrets or SecretStore(store.path.parent / "dhchap.json")
        self.portals = portals
        self.device_path = device_path
        self._lock = threading.Lock()
        self.problems: dict[str, str] = {}  # volume id -> why its saved export is not served

    # ----------------------------------------------------------------- queries
    def get(self, volume_id: str) -> Export | None:
        nqn = naming.subsystem_nqn(volume_id)
        if not self.nvmet.available() or nqn not in self.nvmet.subsystems():
            return None
        sub = self.nvmet.subsystem(nqn)
        return self._describe(volume_id, sub.allowed_hosts(), self.store.readonly(volume_id))

    def list(self) -> list[Export]:
        if not self.nvmet.available():
            return []
        prefix = naming.subsystem_nqn("")
        ids = [nqn[len(prefix):] for nqn in self.nvmet.subsystems() if nqn.startswith(prefix)]
        return [e for e in (self.get(v) for v in sorted(ids)) if e is not None]

    def is_exported(self, volume_id: str) -> bool:
        return volume_id in self.store.load() or self.get(volume_id) is not None

    # --------------------------------------------------------------- mutations
    def export(self, volume_id: str, hosts: Iterable[str]) -> Export:
        wanted = frozenset(validate.host_nqn(h) for h in hosts)
        with self._lock:
            self._apply(volume_id, wanted)
            faults.point("export.after-configfs")
            self.store.put(volume_id, wanted)
            self.problems.pop(volume_id, None)
        log.info("exported", volume_id=volume_id, hosts=len(wanted))
        return self._describe(volume_id, wanted)

    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False, auth: str = "none") -> Export:
        validate.host_nqn(host_nqn)
        dhchap.check_mode(auth)
        with self._lock:
            hosts = self.store.load().get(volume_id, frozenset()) | {host_nqn}
            ro = self.store.readonly(volume_id) - {host_nqn} | ({host_nqn} if readonly else set())
            creds = self._new_credentials(volume_id, host_nqn, auth)
            if creds.secret:
                self._require_auth(host_nqn)
                self.secrets.put(volume_id, host_nqn, creds)  # before configfs: a restart replays it
            else:
                self.secrets.drop(volume_id, host_nqn)
            self._apply(volume_id, hosts)
            faults.point("add_host.after-configfs")
            self.store.put(volume_id, hosts, frozenset(ro))
            self.problems.pop(volume_id, None)
        log.info("host allowed", volume_id=volume_id, host_nqn=host_nqn, readonly=readonly, auth=auth)
        return self._describe(volume_id, hosts, ro)

    def credentials(self, volume_id: str, host_nqn: str) -> HostCredentials:
        """What `host_nqn` must present to connect to this volume: its host entry's keys
        (a host with authenticated volumes here authenticates on all of them)."""
        if host_nqn not in self.store.load().get(volume_id, frozenset()):
            raise NotFound(f"volume {volume_id} is not exported to host_nqn {host_nqn}")
        own = self.secrets.get(volume_id, host_nqn) or HostCredentials()
        keys = self._host_keys(host_nqn)
        if not keys.secret:
            return HostCredentials()
        mode = own.mode if own.mode != "none" else "unidirectional"
        ctrl = (own.ctrl_secret or keys.ctrl_secret) if mode == "bidirectional" else ""
        return HostCredentials(mode, keys.secret, ctrl)

    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        """Disallow a host and fence it: when this returns, the host has no live
        controller on the volume's subsystem (see _fence). The host is recorded as
        "to fence" before anything changes, so a retry after a crash finishes the fence."""
        with self._lock:
            desired = self.store.load()
            if volume_id not in desired and self.get(volume_id) is None:
                return None
            hosts = desired.get(volume_id, frozenset()) - {host_nqn}
            was_allowed = host_nqn in desired.get(volume_id, frozenset()) or host_nqn in self._configured(volume_id)
            pending = self.store.fencing(volume_id) | ({host_nqn} if was_allowed else set())
            self.store.put(volume_id, hosts, fence=frozenset(pending))
            self.secrets.drop(volume_id, host_nqn)
            faults.point("remove_host.after-store")
            self._apply(volume_id, hosts)
            faults.point("remove_host.after-disallow")
            if pending:
                self._fence(volume_id, hosts)
        log.info("host disallowed", volume_id=volume_id, host_nqn=host_nqn, fenced=sorted(pending))
        return self._describe(volume_id, hosts, self.store.readonly(volume_id))

    def unexport(self, volume_id: str) -> None:
        nqn = naming.subsystem_nqn(volume_id)
        with self._lock:
            self.store.drop(volume_id)
            self.secrets.drop(volume_id)
            self.problems.pop(volume_id, None)
            faults.point("unexport.after-store")
            if self.nvmet.available() and nqn in self.nvmet.subsystems():
                sub = self.nvmet.subsystem(nqn)
                hosts = sub.allowed_hosts()
                sub.delete(self.nvmet.ports())
                for host in hosts:
                    self.nvmet.prune_host(host)
        log.info("unexported", volume_id=volume_id)

    def revalidate(self, volume_id: str) -> None:
        """After a resize: let connected hosts see the new size."""
        export = self.get(volume_id)
        if export is not None:
            self.nvmet.subsystem(export.subsystem_nqn).namespace(NSID, "lookup").revalidate_size()

    def restore(self, volume_exists: Callable[[str], bool]) -> None:
        """Re-apply every saved export, each on its own: one that cannot be restored (its
        volume is gone, configfs refuses it) is logged, kept in the store, reported in
        `problems` (health) and skipped; the others serve. Then remove the exports of
        our volumes that configfs holds but the store does not (a crash between the
        two; the call that made them never succeeded)."""
        saved = self.store.load()
        self.problems = {}
        for volume_id, hosts in sorted(saved.items()):
            try:
                if not volume_exists(volume_id):
                    raise SluiceError(f"volume {volume_id} is missing (its LV was removed?)")
                with self._lock:
                    self._apply(volume_id, hosts)
                    if self.store.fencing(volume_id):
                        self._fence(volume_id, hosts)
            except (SluiceError, OSError) as exc:
                self.problems[volume_id] = f"export of {volume_id} not restored: {exc}"
                log.error("export not restored", volume_id=volume_id, error=str(exc))
        for export in self.list():
            if export.volume_id not in saved and volume_exists(export.volume_id):
                log.warning("removing a half-made export (crash before it was saved)",
                            volume_id=export.volume_id)
                self.unexport(export.volume_id)
        log.info("exports restored", count=len(saved) - len(self.problems), failed=len(self.problems))

    # ---------------------------------------------------------------- internals
    def _apply(self, volume_id: str, hosts: frozenset[str]) -> None:
        self.nvmet.require()
        sub = self.nvmet.subsystem(naming.subsystem_nqn(volume_id), "ensure")
        sub.set("attr_allow_any_host", "0")
        sub.set("attr_serial", naming.serial(volume_id))
        sub.namespace(NSID, "ensure").configure(self.device_path(volume_id),
                                                naming.namespace_uuid(volume_id),
                                                naming.namespace_nguid(volume_id))
        for stale in sub.allowed_hosts() - hosts:
            sub.disallow_host(stale)
            self.nvmet.prune_host(stale)
        faults.point("apply.after-namespace")
        for nqn in sorted(hosts):
            host = self.nvmet.host(nqn, "ensure")
            keys = self._host_keys(nqn)
            if keys.secret:  # before the host may connect
                host.set_auth(keys.secret, keys.ctrl_secret, dhchap.HASH, dhchap.DHGROUP)
            sub.allow_host(host)
        faults.point("apply.after-hosts")
        for portal in self.portals:
            self._port(portal).link_subsystem(sub)

    def _fence(self, volume_id: str, hosts: frozenset[str]) -> None:
        """Tear down every controller of the subsystem: nvmet keeps a connected
        controller alive when its host only leaves allowed_hosts, but deletes a port's
        controllers of a subsystem when the subsystem is unlinked from the port. So:
        unlink from every port, drain the namespace (requests already in flight
        complete), relink. The hosts that stay allowed reconnect after their
        reconnect_delay; their queued I/O is retried then, not failed."""
        nqn = naming.subsystem_nqn(volume_id)
        sub = self.nvmet.subsystem(nqn)
        for port in self.nvmet.ports():
            port.unlink_subsystem(nqn)
        faults.point("fence.after-unlink")
        sub.namespace(NSID, "ensure").drain()
        for portal in self.portals:
            self._port(portal).link_subsystem(sub)
        self.store.put(volume_id, hosts, fence=frozenset())

    def _new_credentials(self, volume_id: str, host_nqn: str, mode: str) -> HostCredentials:
        """Fresh keys, unless the host's entry already holds keys its other volumes'
        controllers reconnect with (see the module doc)."""
        if mode == "none":
            return HostCredentials()
        shared = self._host_keys(host_nqn, exclude=volume_id)
        ctrl = (shared.ctrl_secret or dhchap.new_secret()) if mode == "bidirectional" else ""
        return HostCredentials(mode, shared.secret or dhchap.new_secret(), ctrl)

    def _host_keys(self, host_nqn: str, exclude: str = "") -> HostCredentials:
        """The keys the host's entry holds: its volumes' (they agree, see above)."""
        held = [c for vol, c in sorted(self.secrets.of_host(host_nqn).items()) if vol != exclude]
        return HostCredentials("", next((c.secret for c in held if c.secret), ""),
                               next((c.ctrl_secret for c in held if c.ctrl_secret), ""))

    def _require_auth(self, host_nqn: str) -> None:
        self.nvmet.require()
        if not self.nvmet.host(host_nqn, "ensure").supports_auth():
            self.nvmet.prune_host(host_nqn)
            raise FailedPrecondition(
                f"auth: this target's kernel has no NVMe target authentication "
                f"({self.nvmet.root}/hosts/<nqn>/dhchap_key is missing; CONFIG_NVME_TARGET_AUTH, e.g. "
                f"Debian trixie's 6.12); publish with StorageClass nvme.auth: none to go without it")

    def _configured(self, volume_id: str) -> set[str]:
        nqn = naming.subsystem_nqn(volume_id)
        if not self.nvmet.available() or nqn not in self.nvmet.subsystems():
            return set()
        return self.nvmet.subsystem(nqn).allowed_hosts()

    def _port(self, portal: Portal) -> Port:
        port = self.nvmet.port(port_id(portal), "ensure")
        port.configure(portal.traddr, portal.trsvcid, portal.adrfam)
        return port

    def _describe(self, volume_id: str, hosts: Iterable[str], readonly: Iterable[str] = ()) -> Export:
        return naming.export(volume_id, self.portals, hosts, readonly)

