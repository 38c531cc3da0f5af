"""Exports of the SPDK backend (mixed into SpdkBackend): one subsystem per volume,
namespace 1 with Sluice's UUID/NGUID, a TCP listener per portal, exactly the allowed
hosts; each step looks before it acts."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import structlog

from nvme_target import naming, validate
from nvme_target.backend import only
from nvme_target.dhchap import HostCredentials
from nvme_target.model import Export, Portal
from sluice_common.errors import FailedPrecondition, InvalidArgument, NotFound

MODEL = "Sluice"
KEY_FIELDS = ("dhchap_key", "dhchap_ctrlr_key")
log = structlog.get_logger(__name__)


class SpdkExports:
    def portals(self) -> tuple[Portal, ...]:
        return self._portals

    def export_volume(self, volume_id: str, hosts: Iterable[str] = ()) -> Export:
        hosts = frozenset(validate.host_nqn(h) for h in hosts)
        with self._lock:
            self.get_volume(volume_id)
            self._export(volume_id, hosts)
            self.state.put_export(volume_id, hosts)
            self._limits_at_export(volume_id)
        return self._describe(volume_id, hosts)

    def add_host(self, volume_id: str, host_nqn: str, readonly: bool = False, auth: str = "none") -> Export:
        validate.host_nqn(host_nqn)
        creds = HostCredentials.generate(auth)  # new keys at every publish (per volume and host here)
        with self._lock:
            hosts = self.state.exports.get(volume_id, frozenset()) | {host_nqn}
            ro = self.state.readonly.get(volume_id, frozenset()) - {host_nqn} | ({host_nqn} if readonly else set())
            self.get_volume(volume_id)
            if creds.secret:
                self.keys.secrets.put(volume_id, host_nqn, creds)  # desired state first: a replay restores it
            else:
                self.keys.secrets.drop(volume_id, host_nqn)
            self._export(volume_id, hosts)
            self.state.put_export(volume_id, hosts, frozenset(ro))
            self._limits_at_export(volume_id)
            self.keys.prune()
        log.info("host allowed", volume_id=volume_id, host_nqn=host_nqn, readonly=readonly, auth=auth)
        return self._describe(volume_id, hosts)

    def host_credentials(self, volume_id: str, host_nqn: str) -> HostCredentials:
        validate.volume_id(volume_id)
        validate.host_nqn(host_nqn)
        if host_nqn not in self.state.exports.get(volume_id, frozenset()):
            raise NotFound(f"volume {volume_id} is not exported to host_nqn {host_nqn}")
        return self.keys.secrets.get(volume_id, host_nqn) or HostCredentials()

    def remove_host(self, volume_id: str, host_nqn: str) -> Export | None:
        with self._lock:
            if volume_id not in self.state.exports:
                return None
            export = self.export_volume(volume_id, self.state.exports[volume_id] - {host_nqn})
            self.keys.secrets.drop(volume_id, host_nqn)
            self.keys.prune()
            return export

    def unexport_volume(self, volume_id: str) -> None:
        with self._lock:
            try:
                self._call("nvmf_delete_subsystem", nqn=naming.subsystem_nqn(volume_id))
            except InvalidArgument:
                if self._subsystem(naming.subsystem_nqn(volume_id)) is not None:
                    raise  # it is there, so that was something else
            self.state.drop_export(volume_id)
            self.keys.secrets.drop(volume_id)
            self.keys.prune()

    def get_export(self, volume_id: str) -> Export | None:
        hosts = self.state.exports.get(volume_id)
        return self._describe(volume_id, hosts) if hosts is not None else None

    def list_exports(self, volume_ids: Collection[str] | None = None) -> list[Export]:
        return only([self._describe(v, h) for v, h in sorted(self.state.exports.items())], volume_ids)

    def _describe(self, vol_id: str, hosts: frozenset[str]) -> Export:
        return naming.export(vol_id, self._portals, hosts, self.state.readonly.get(vol_id, ()))

    def _subsystem(self, nqn: str) -> dict | None:
        try:
            return self.rpc.call("nvmf_get_subsystems", nqn=nqn)[0]
        except NotFound:
            return None

    def _exported_nqn(self, vol_id: str) -> bool:
        return self._subsystem(naming.subsystem_nqn(vol_id)) is not None

    def _export(self, vol_id: str, hosts: frozenset[str], listed: Mapping[str, dict] | None = None) -> None:
        """Converge the volume's subsystem on: namespace 1 with Sluice's UUID/NGUID, a
        listener per portal, exactly `hosts`. Each step looks before it acts, so a
        repeat (or a replay after a target restart) does only what is missing. `sub`:
        `listed`: the subsystems as just listed (a replay lists them all at once)."""
        nqn, ns_uuid = naming.subsystem_nqn(vol_id), naming.namespace_uuid(vol_id)
        sub = self._subsystem(nqn) if listed is None else listed.get(nqn)
        if sub is None:
            try:
                self.rpc.call("nvmf_create_subsystem", nqn=nqn, allow_any_host=False,
                              serial_number=naming.serial(vol_id), model_number=MODEL)
            except InvalidArgument:
                if self._subsystem(nqn) is None:  # not a duplicate: the NQN itself is bad
                    raise
            sub = self._subsystem(nqn)
            assert sub is not None
        bdev = self._bdev(vol_id)
        if bdev is None:
            raise NotFound(f"volume {vol_id} not found")
        if not any(ns["bdev_name"] == bdev["name"] for ns in sub["namespaces"]):
            self._guard_uuid(ns_uuid, bdev["name"])
            self.rpc.call("nvmf_subsystem_add_ns", nqn=nqn, namespace={
                "bdev_name": self._alias(vol_id), "nsid": 1, "uuid": ns_uuid,
                "nguid": naming.namespace_nguid(vol_id).replace("-", "").upper()})
        have = {(a["traddr"], str(a["trsvcid"])) for a in sub["listen_addresses"]}
        for portal in self._portals:
            if (portal.traddr, portal.trsvcid) not in have:
                self.rpc.call("nvmf_subsystem_add_listener", nqn=nqn, listen_address={
                    "trtype": "TCP", "adrfam": "IPv6" if portal.adrfam == "ipv6" else "IPv4",
                    "traddr": portal.traddr, "trsvcid": portal.trsvcid})
        self._hosts(vol_id, nqn, hosts, {h["nqn"]: h for h in sub["hosts"]})

    def _hosts(self, vol_id: str, nqn: str, hosts: frozenset[str], allowed: Mapping[str, dict]) -> None:
        """Exactly `hosts`, each with the DH-HMAC-CHAP keys it was published with."""
        held = self.keys.held() if any(self.keys.secrets.get(vol_id, h) for h in hosts) else set()
        for host in sorted(hosts):
            keys = self.keys.wanted(vol_id, host, held)
            have = allowed.get(host)
            if have is None:
                self.rpc.call("nvmf_subsystem_add_host", nqn=nqn, host=host, **keys)
            elif {k: have[k] for k in KEY_FIELDS if have.get(k)} != keys:
                self.rpc.call("nvmf_subsystem_set_keys", nqn=nqn, host=host, **keys)
        for host in sorted(set(allowed) - hosts):
            self.rpc.call("nvmf_subsystem_remove_host", nqn=nqn, host=host)

    def _guard_uuid(self, ns_uuid: str, bdev_name: str) -> None:
        """SPDK accepts a namespace UUID another bdev already uses; Sluice does not."""
        for sub in self.rpc.call("nvmf_get_subsystems"):
            for ns in sub.get("namespaces", []):
                if ns.get("uuid") == ns_uuid and ns.get("bdev_name") != bdev_name:
                    raise FailedPrecondition(f"namespace UUID {ns_uuid} is already used by bdev {ns['bdev_name']} "
                                             f"in {sub['nqn']}")

