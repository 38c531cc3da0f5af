"""Exports of block devices through kernel nvmet: one subsystem per volume, namespace 1
with the volume's fixed UUID/NGUID, linked to every portal, open to exactly the allowed
hosts (attr_allow_any_host=0, set before any port link exists).

The desired state is written to the ExportStore so restore() can rebuild configfs after
a reboot. Ordering keeps the saved state the more restrictive one at every instant:
hosts are added to configfs before the store, and removed from the store first.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable

import structlog

from nvme_target import naming, validate
from nvme_target.exports import ExportStore
from nvme_target.model import Export, Portal
from nvme_target.nvmet import Nvmet, Port

log = structlog.get_logger(__name__)
NSID = 1


def port_id(portal: Portal) -> int:
    """A stable nvmet port id (1..65000) per address, so several agents can share a kernel."""
    return zlib.crc32(f"{portal.traddr}:{portal.trsvcid}".encode()) % 65000 + 1


class NvmetExporter:
    def __init__(self, nvmet: Nvmet, store: ExportStore, portals: tuple[Portal, ...],
                 device_path: Callable[[str], str]) -> None:
        self.nvmet = nvmet
        self.store = store
        self.portals = portals
        self.device_path = device_path
        self._lock = threading.Lock()

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
            self.store.put(volume_id, wanted)
        log.info("exported", volume_id=volume_id, hosts=len(wanted))
        return self._describe(volume_id, wanted)

    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False) -> Export:
        validate.host_nqn(host_nqn)
        with self._lock:
            hosts = self.store.load().get(volume_id, frozenset()) | {host_nqn}
            ro = self.store.readonly(volume_id) - {host_nqn} | ({host_nqn} if readonly else set())
            self._apply(volume_id, hosts)
            self.store.put(volume_id, hosts, frozenset(ro))
        log.info("host allowed", volume_id=volume_id, host_nqn=host_nqn, readonly=readonly)
        return self._describe(volume_id, hosts, ro)

    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        with self._lock:
            desired = self.store.load()
            if volume_id not in desired and self.get(volume_id) is None:
                return None
            hosts = desired.get(volume_id, frozenset()) - {host_nqn}
            self.store.put(volume_id, hosts)
            self._apply(volume_id, hosts)
        log.info("host disallowed", volume_id=volume_id, host_nqn=host_nqn)
        return self._describe(volume_id, hosts, self.store.readonly(volume_id))

    def unexport(self, volume_id: str) -> None:
        nqn = naming.subsystem_nqn(volume_id)
        with self._lock:
            self.store.drop(volume_id)
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
        """Re-apply every saved export whose volume still exists; forget the others."""
        for volume_id, hosts in sorted(self.store.load().items()):
            if not volume_exists(volume_id):
                log.warning("saved export of a missing volume dropped", volume_id=volume_id)
                self.store.drop(volume_id)
                continue
            with self._lock:
                self._apply(volume_id, hosts)
        log.info("exports restored", count=len(self.store.load()))

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
        for nqn in sorted(hosts):
            sub.allow_host(self.nvmet.host(nqn, "ensure"))
        for portal in self.portals:
            self._port(portal).link_subsystem(sub)

    def _port(self, portal: Portal) -> Port:
        port = self.nvmet.port(port_id(portal), "ensure")
        port.configure(portal.traddr, portal.trsvcid, portal.adrfam)
        return port

    def _describe(self, volume_id: str, hosts: Iterable[str], readonly: Iterable[str] = ()) -> Export:
        return naming.export(volume_id, self.portals, hosts, readonly)

