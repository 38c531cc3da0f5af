"""A fake SPDK v26.05 nvmf_tgt for host tests: a JSON-RPC server on a unix socket that
answers the methods a driver calls exactly as the real target did in
tests/fixtures/spdk/rpc-transcript-v26.05.jsonl — results, error codes and messages,
the things SPDK does not refuse (deleting an exported lvol or a whole lvstore, a
duplicate namespace UUID, shrinking) and what a restart forgets (transports,
subsystems, QoS; lvols persist on the base bdev's "disk").

tests/unit/test_spdk_fake.py replays every line of the transcripts against it and
compares each answer, which is what keeps it honest.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "spdk"
MiB = 1 << 20
DISCOVERY = {"nqn": "nqn.2014-08.org.nvmexpress.discovery", "subtype": "Discovery", "listen_addresses": [],
             "allow_any_host": True, "hosts": []}
NO_DEVICE = (-19, "No such device")
INVALID_PARAMS = (-32602, "Invalid parameters")
INTERNAL = (-32603, "Internal error")
EAGAIN = (-32602, "Failed to configure rate limit: Resource temporarily unavailable")
DECODE = (-32603, "spdk_json_decode_object failed")

# the keys each method decodes; anything else fails to decode, as in SPDK
PARAMS = {
    "spdk_get_version": set(),
    "nvmf_create_transport": {"trtype", "max_queue_depth", "max_io_qpairs_per_ctrlr", "in_capsule_data_size",
                              "max_io_size", "io_unit_size", "c2h_success", "sock_priority"},
    "nvmf_get_transports": {"trtype", "tgt_name"},
    "bdev_aio_create": {"name", "filename", "block_size", "readonly", "fallocate"},
    "bdev_aio_delete": {"name"},
    "bdev_malloc_create": {"name", "num_blocks", "block_size", "uuid"},
    "bdev_malloc_delete": {"name"},
    "bdev_get_bdevs": {"name", "timeout"},
    "bdev_get_iostat": {"names", "per_channel"},
    "bdev_set_qos_limit": {"name", "rw_ios_per_sec", "rw_mbytes_per_sec", "r_mbytes_per_sec", "w_mbytes_per_sec"},
    "bdev_lvol_create_lvstore": {"bdev_name", "lvs_name", "cluster_sz", "clear_method", "num_md_pages_per_cluster_ratio"},
    "bdev_lvol_get_lvstores": {"lvs_name", "uuid"},
    "bdev_lvol_delete_lvstore": {"lvs_name", "uuid"},
    "bdev_lvol_create": {"lvol_name", "size_in_mib", "lvs_name", "uuid", "thin_provision", "clear_method"},
    "bdev_lvol_get_lvols": {"lvs_name", "lvs_uuid"},
    "bdev_lvol_snapshot": {"lvol_name", "snapshot_name"},
    "bdev_lvol_clone": {"snapshot_name", "clone_name"},
    "bdev_lvol_resize": {"name", "size_in_mib"},
    "bdev_lvol_delete": {"name"},
    "bdev_lvol_inflate": {"name"},
    "bdev_lvol_decouple_parent": {"name"},
    "nvmf_create_subsystem": {"nqn", "serial_number", "model_number", "allow_any_host", "max_namespaces",
                              "ana_reporting", "min_cntlid", "max_cntlid", "tgt_name"},
    "nvmf_delete_subsystem": {"nqn", "tgt_name"},
    "nvmf_get_subsystems": {"nqn", "tgt_name"},
    "nvmf_subsystem_add_ns": {"nqn", "namespace", "tgt_name"},
    "nvmf_subsystem_remove_ns": {"nqn", "nsid", "tgt_name"},
    "nvmf_subsystem_add_host": {"nqn", "host", "tgt_name", "psk", "dhchap_key", "dhchap_ctrlr_key"},
    "nvmf_subsystem_set_keys": {"nqn", "host", "tgt_name", "dhchap_key", "dhchap_ctrlr_key"},
    "keyring_file_add_key": {"name", "path"},
    "keyring_file_remove_key": {"name"},
    "keyring_get_keys": set(),
    "nvmf_subsystem_remove_host": {"nqn", "host", "tgt_name"},
    "nvmf_subsystem_add_listener": {"nqn", "listen_address", "tgt_name", "secure_channel"},
    "nvmf_subsystem_remove_listener": {"nqn", "listen_address", "tgt_name"},
}


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _templates() -> dict:
    """Response shapes taken from the transcript itself."""
    out = {}
    for line in (FIXTURES / "rpc-transcript-v26.05.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["label"] == "get transports":
            out["transport"] = entry["response"]["result"][0]
        elif entry["label"] == "get bdev vol1 (shows qos)":
            out["lvol_bdev"] = entry["response"]["result"][0]
        elif entry["label"] == "iostat vol1 (v26.05 uses names[])":
            out["iostat"] = entry["response"]["result"]
        elif entry["label"] == "get subsystem by nqn":
            out["subsystem"] = entry["response"]["result"][0]
    for line in (FIXTURES / "rpc-transcript-v26.05-limits.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["label"] == "aio base bdev shows its block size":
            out["aio_bdev"] = entry["response"]["result"][0]
    return out


@dataclass
class Lvol:
    uuid: str
    name: str
    size: int
    thin: bool
    snapshot: bool = False
    parent: Lvol | None = None          # the snapshot this lvol is a clone of
    qos: dict = field(default_factory=lambda: {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
                                               "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0})
    qos_on: bool = False                # SPDK allocated QoS for it (a limit was ever set)
    allocated: int = 0                  # clusters a thin lvol has written (tests fill the store)


@dataclass
class Lvstore:
    uuid: str
    name: str
    base: str
    cluster: int
    total_clusters: int
    lvols: dict[str, Lvol] = field(default_factory=dict)  # by name, in creation order

    def free_clusters(self) -> int:
        return self.total_clusters - sum(lv.allocated if lv.thin else -(-lv.size // self.cluster)
                                         for lv in self.lvols.values())

    def clones(self, snap: Lvol) -> list[Lvol]:
        return [lv for lv in self.lvols.values() if lv.parent is snap]


@dataclass
class BaseBdev:
    name: str
    kind: str              # "aio" or "malloc"
    disk: str              # where its lvstore persists ("malloc:<name>" is lost on restart)
    size: int
    block_size: int
    override: bool = False  # block_size given rather than detected
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))


class FakeSpdk:
    """The target's state and its RPC methods (no sockets here: see FakeSpdkServer)."""

    def __init__(self, files: dict[str, int] | None = None, devices: dict[str, int] | None = None) -> None:
        """`files`: the aio backing files that exist, with their sizes; `devices`: which
        of them are block devices, with their logical block size."""
        self.files = dict(files or {})
        self.devices = dict(devices or {})
        self.errors_logged: list[str] = []  # what SPDK would log as ERROR
        self.disks: dict[str, Lvstore] = {}          # an lvstore on a base bdev's storage
        self.templates = _templates()
        self.calls: list[tuple[str, dict]] = []
        self.restart()

    def restart(self) -> None:
        """What a killed and restarted nvmf_tgt has: nothing but the disks."""
        self.transports: set[str] = set()
        self.bases: dict[str, BaseBdev] = {}
        self.lvstores: dict[str, Lvstore] = {}
        self.subsystems: dict[str, dict] = {}
        self.keyring: dict[str, dict] = {}  # name -> keyring_get_keys entry
        for disk in [d for d in self.disks if d.startswith("malloc:")]:
            del self.disks[disk]
        for lvs in self.disks.values():  # QoS limits live in memory only
            for lv in lvs.lvols.values():
                lv.qos, lv.qos_on = Lvol("", "", 0, True).qos, False

    # --------------------------------------------------------------- dispatch
    def handle(self, method: str, params: dict | None) -> object:
        params = params or {}
        self.calls.append((method, params))
        if method not in PARAMS:
            raise RpcError(-32601, "Method not found")
        if set(params) - PARAMS[method]:
            raise RpcError(*DECODE)
        return getattr(self, method)(**params)

    # -------------------------------------------------------------- app/nvmf
    def spdk_get_version(self):
        return {"version": "SPDK v26.05", "fields": {"major": 26, "minor": 5, "patch": 0, "suffix": ""}}

    def nvmf_create_transport(self, trtype, **_):
        if trtype.upper() not in ("TCP", "RDMA"):
            raise RpcError(-32602, f"Invalid transport type '{trtype}'")
        if trtype.upper() in self.transports:
            raise RpcError(-32603, f"Transport type '{trtype.upper()}' already exists")
        self.transports.add(trtype.upper())
        return True

    def nvmf_get_transports(self, trtype=None, tgt_name=None):
        return [dict(self.templates["transport"], trtype=t) for t in sorted(self.transports)
                if trtype is None or t == trtype.upper()]

    # ------------------------------------------------------------ base bdevs
    def bdev_aio_create(self, name, filename, block_size=0, **_):
        """A regular file has no block size SPDK can detect: block_size is required (a
        block device's is detected; a different one is taken, with an error logged)."""
        if self._bdev_exists(name):
            raise RpcError(-17, "File exists")
        if filename not in self.files:
            raise RpcError(-2, "No such file or directory")
        override = bool(block_size)
        block_size = block_size or self.devices.get(filename, 0)
        if not block_size:
            raise RpcError(-22, "Invalid argument")
        if filename in self.devices and block_size != self.devices[filename]:
            self.errors_logged.append(f"Specified block size {block_size} does not match auto-detected "
                                      f"block size {self.devices[filename]}")
        self.bases[name] = BaseBdev(name, "aio", filename, self.files[filename], block_size, override)
        self._examine(name)
        return name

    def bdev_malloc_create(self, name, num_blocks, block_size, uuid=None):
        if self._bdev_exists(name):
            raise RpcError(-17, "File exists")
        if block_size < 512 or block_size & (block_size - 1):
            raise RpcError(-22, "Invalid argument")
        self.bases[name] = BaseBdev(name, "malloc", f"malloc:{name}", num_blocks * block_size, block_size)
        return name

    def bdev_aio_delete(self, name):
        return self._delete_base(name, "aio")

    def bdev_malloc_delete(self, name):
        return self._delete_base(name, "malloc")

    def _delete_base(self, name, kind):
        base = self.bases.get(name)
        if base is None or base.kind != kind:
            raise RpcError(*NO_DEVICE)
        for lvs in [s for s in self.lvstores.values() if s.base == name]:
            for lv in lvs.lvols.values():  # closing the lvstore hot-removes its namespaces
                self._hot_remove(lv)
            del self.lvstores[lvs.name]
        del self.bases[name]
        if kind == "malloc":
            self.disks.pop(base.disk, None)
        return True

    def _examine(self, name):
        lvs = self.disks.get(self.bases[name].disk)
        if lvs is not None:
            self.lvstores[lvs.name] = lvs

    # ----------------------------------------------------------------- lvstore
    def bdev_lvol_create_lvstore(self, bdev_name, lvs_name, cluster_sz=4 * MiB, **_):
        base = self.bases.get(bdev_name)
        if base is None:
            raise RpcError(*NO_DEVICE)
        if lvs_name in self.lvstores:
            raise RpcError(-17, "File exists")
        if any(s.base == bdev_name for s in self.lvstores.values()):
            raise RpcError(-1, "Operation not permitted")
        lvs = Lvstore(str(uuidlib.uuid4()), lvs_name, bdev_name, cluster_sz, base.size // cluster_sz - 1)
        self.lvstores[lvs_name] = self.disks[base.disk] = lvs
        return lvs.uuid

    def bdev_lvol_get_lvstores(self, lvs_name=None, uuid=None):
        stores = [s for s in self.lvstores.values()
                  if (lvs_name is None or s.name == lvs_name) and (uuid is None or s.uuid == uuid)]
        if (lvs_name or uuid) and not stores:
            raise RpcError(*NO_DEVICE)
        return [{"uuid": s.uuid, "name": s.name, "base_bdev": s.base, "total_data_clusters": s.total_clusters,
                 "free_clusters": s.free_clusters(), "block_size": self.bases[s.base].block_size,
                 "cluster_size": s.cluster, "max_growable_size": 137271181312} for s in stores]

    def bdev_lvol_delete_lvstore(self, lvs_name=None, uuid=None):
        lvs = next((s for s in self.lvstores.values() if s.name == lvs_name or s.uuid == uuid), None)
        if lvs is None:
            raise RpcError(*NO_DEVICE)
        for lv in lvs.lvols.values():  # SPDK destroys exported lvols too
            self._hot_remove(lv)
        del self.lvstores[lvs.name]
        self.disks.pop(self.bases[lvs.base].disk, None)
        return True

    # -------------------------------------------------------------------- lvols
    def bdev_lvol_create(self, lvol_name, size_in_mib, lvs_name=None, uuid=None, thin_provision=False, **_):
        lvs = next((s for s in self.lvstores.values() if s.name == lvs_name or s.uuid == uuid), None)
        if lvs is None:
            raise RpcError(*NO_DEVICE)
        if lvol_name in lvs.lvols:
            raise RpcError(-17, "File exists")
        size = -(-size_in_mib * MiB // lvs.cluster) * lvs.cluster
        if not thin_provision and size // lvs.cluster > lvs.free_clusters():
            raise RpcError(-32602, "No space left on device")
        lv = Lvol(str(uuidlib.uuid4()), lvol_name, size, bool(thin_provision))
        lvs.lvols[lvol_name] = lv
        return lv.uuid

    def bdev_lvol_snapshot(self, lvol_name, snapshot_name):
        lvs, lv = self._lvol(lvol_name)
        if snapshot_name in lvs.lvols:
            raise RpcError(-32602, "File exists")
        snap = Lvol(str(uuidlib.uuid4()), snapshot_name, lv.size, True, snapshot=True, parent=lv.parent)
        lvs.lvols[snapshot_name] = snap
        lv.parent = snap
        return snap.uuid

    def bdev_lvol_clone(self, snapshot_name, clone_name):
        lvs, snap = self._lvol(snapshot_name)
        if not snap.snapshot:
            raise RpcError(-32602, "Invalid argument")
        if clone_name in lvs.lvols:
            raise RpcError(-32602, "File exists")
        clone = Lvol(str(uuidlib.uuid4()), clone_name, snap.size, True, parent=snap)
        lvs.lvols[clone_name] = clone
        return clone.uuid

    def bdev_lvol_resize(self, name, size_in_mib):
        lvs, lv = self._lvol(name)
        if lv.snapshot:
            raise RpcError(-32602, "Operation not permitted")
        size = -(-size_in_mib * MiB // lvs.cluster) * lvs.cluster
        if not lv.thin and (size - lv.size) // lvs.cluster > lvs.free_clusters():
            raise RpcError(-32602, "No space left on device")
        lv.size = size  # shrinking is allowed: SPDK does not refuse it
        return True

    def bdev_lvol_delete(self, name):
        lvs, lv = self._lvol(name)
        clones = lvs.clones(lv)
        if len(clones) > 1:
            raise RpcError(-32603, "Operation not permitted")
        for clone in clones:  # the one clone takes over the snapshot's data
            clone.parent = lv.parent
        self._hot_remove(lv)  # even when exported: the namespace just disappears
        del lvs.lvols[lv.name]
        return True

    def bdev_lvol_inflate(self, name):
        """Copies every cluster in: independent of its snapshot, and no longer thin."""
        _, lv = self._lvol(name)
        lv.parent, lv.thin = None, False
        return True

    def bdev_lvol_decouple_parent(self, name):
        """Copies only the parent's clusters: independent, still thin."""
        _, lv = self._lvol(name)
        lv.parent = None
        return True

    def bdev_lvol_get_lvols(self, lvs_name=None, lvs_uuid=None):
        stores = [s for s in self.lvstores.values()
                  if (lvs_name is None or s.name == lvs_name) and (lvs_uuid is None or s.uuid == lvs_uuid)]
        if (lvs_name or lvs_uuid) and not stores:
            raise RpcError(*NO_DEVICE)
        return [{"alias": f"{s.name}/{lv.name}", "uuid": lv.uuid, "name": lv.name,
                 "is_thin_provisioned": lv.thin, "is_snapshot": lv.snapshot, "is_clone": lv.parent is not None,
                 "is_esnap_clone": False, "is_degraded": False,
                 "num_allocated_clusters": lv.allocated if lv.thin else lv.size // s.cluster,
                 "lvs": {"name": s.name, "uuid": s.uuid}} for s in stores for lv in s.lvols.values()]

    # -------------------------------------------------------------------- bdevs
    def bdev_get_bdevs(self, name=None, timeout=None):
        if name is not None:
            found = self._find_bdev(name)
            if found is None:
                raise RpcError(*NO_DEVICE)
            return [self._bdev_json(found)]
        return [self._bdev_json(b) for b in [*self.bases.values(),
                                             *((s, lv) for s in self.lvstores.values() for lv in s.lvols.values())]]

    def bdev_set_qos_limit(self, name, **limits):
        found = self._find_bdev(name)
        if found is None:
            raise RpcError(*NO_DEVICE)
        if not limits:
            raise RpcError(-22, "No rate limits specified")
        if not isinstance(found, tuple):
            raise RpcError(-22, "Invalid argument")
        lv = found[1]
        if lv.qos_on and not self._exported(lv):
            # opening the bdev restarts its QoS, which needs a channel: any change is refused
            raise RpcError(*EAGAIN)
        enable = any(limits.values()) or any(v for k, v in lv.qos.items() if k not in limits)
        if enable or lv.qos_on:
            lv.qos_on = True
            for key, value in limits.items():
                lv.qos[key] = -(-value // 1000) * 1000 if key == "rw_ios_per_sec" else value
        return True

    def write(self, name: str, clusters: int) -> None:
        """Test helper: a host wrote `clusters` new clusters of a thin lvol."""
        lvs, lv = self._lvol(name)
        lv.allocated = min(lv.allocated + clusters, -(-lv.size // lvs.cluster))

    def bdev_get_iostat(self, names=None, per_channel=False):
        template = self.templates["iostat"]
        rows = []
        for name in names or []:
            found = self._find_bdev(name)
            if found is None:
                raise RpcError(*NO_DEVICE)
            row = {k: (0 if isinstance(v, int) else v) for k, v in template["bdevs"][0].items()}
            row["name"] = found[1].uuid if isinstance(found, tuple) else found.name
            rows.append(row)
        return {"tick_rate": template["tick_rate"], "ticks": template["ticks"], "bdevs": rows}

    # -------------------------------------------------------------- subsystems
    def nvmf_create_subsystem(self, nqn, allow_any_host=False, serial_number="00000000000000000000",
                              model_number="SPDK bdev Controller", max_namespaces=32, **_):
        if nqn in self.subsystems or not nqn.startswith("nqn.") or len(nqn) < 11:
            raise RpcError(-32603, f"Unable to create subsystem {nqn}")
        self.subsystems[nqn] = {
            "nqn": nqn, "subtype": "NVMe", "listen_addresses": [], "allow_any_host": bool(allow_any_host),
            "hosts": [], "serial_number": serial_number, "model_number": model_number,
            "max_namespaces": max_namespaces, "passthrough": False, "min_cntlid": 1, "max_cntlid": 65519,
            "dmrsl": 2097152, "wzsl": 12, "namespaces": []}
        return True

    def nvmf_delete_subsystem(self, nqn, tgt_name=None):
        if self.subsystems.pop(nqn, None) is None:
            raise RpcError(*INVALID_PARAMS)
        return True

    def nvmf_get_subsystems(self, nqn=None, tgt_name=None):
        if nqn is not None:
            if nqn not in self.subsystems:
                raise RpcError(*NO_DEVICE)
            return [json.loads(json.dumps(self.subsystems[nqn]))]
        return [DISCOVERY, *json.loads(json.dumps(list(self.subsystems.values())))]

    def nvmf_subsystem_add_ns(self, nqn, namespace, tgt_name=None):
        sub = self.subsystems.get(nqn)
        found = self._find_bdev(namespace.get("bdev_name", ""))
        if sub is None or not isinstance(found, tuple):
            raise RpcError(*INVALID_PARAMS)
        lv = found[1]
        nsid = namespace.get("nsid") or next(i for i in range(1, 10**6)
                                             if all(n["nsid"] != i for n in sub["namespaces"]))
        ns_uuid = namespace.get("uuid", lv.uuid)
        if any(n["nsid"] == nsid for n in sub["namespaces"]) or self._exported(lv) or not _is_uuid(ns_uuid):
            raise RpcError(*INVALID_PARAMS)
        sub["namespaces"].append({"nsid": nsid, "bdev_name": lv.uuid, "name": lv.uuid,
                                  "nguid": namespace.get("nguid", lv.uuid.replace("-", "").upper()),
                                  "uuid": ns_uuid})
        sub["namespaces"].sort(key=lambda n: n["nsid"])
        return nsid

    def nvmf_subsystem_remove_ns(self, nqn, nsid, tgt_name=None):
        sub = self.subsystems.get(nqn)
        if sub is None or all(n["nsid"] != nsid for n in sub["namespaces"]):
            raise RpcError(*INVALID_PARAMS)
        sub["namespaces"] = [n for n in sub["namespaces"] if n["nsid"] != nsid]
        return True

    def nvmf_subsystem_add_host(self, nqn, host, dhchap_key=None, dhchap_ctrlr_key=None, **_):
        sub = self.subsystems.get(nqn)
        if sub is None or not self._keys_known(dhchap_key, dhchap_ctrlr_key):
            raise RpcError(*INVALID_PARAMS)  # the log: "Unable to find DH-HMAC-CHAP key: <name>"
        if any(h["nqn"] == host for h in sub["hosts"]):
            raise RpcError(*INTERNAL)
        sub["hosts"].append(self._host_entry(host, dhchap_key, dhchap_ctrlr_key))
        return True

    # Measured on the real v26.05 nvmf_tgt (the session of issue 17): a duplicate key name
    # is -17 "File exists", a key file not 0600 is -1 "Operation not permitted", a missing
    # one -2; removing an unknown key is -126 "Required key not available"; a key removed
    # while a host holds it keeps working for that host; set_keys on a host the subsystem
    # does not have is -22 "Invalid argument", without keys it clears them; the host
    # entries of nvmf_get_subsystems name their keys.
    def keyring_file_add_key(self, name, path):
        if name in self.keyring:
            raise RpcError(-17, "File exists")
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise RpcError(-2, "No such file or directory") from None
        if mode & 0o777 != 0o600:
            raise RpcError(-1, "Operation not permitted")
        self.keyring[name] = {"name": name, "module": "keyring_file", "removed": False, "probed": False,
                              "refcnt": 1, "path": path}
        return True

    def keyring_file_remove_key(self, name):
        if self.keyring.pop(name, None) is None:
            raise RpcError(-126, "Required key not available")
        return True

    def keyring_get_keys(self):
        return [dict(k) for k in self.keyring.values()]

    def nvmf_subsystem_set_keys(self, nqn, host, dhchap_key=None, dhchap_ctrlr_key=None, tgt_name=None):
        sub = self.subsystems.get(nqn)
        if sub is None or not any(h["nqn"] == host for h in sub["hosts"]):
            raise RpcError(-22, "Invalid argument")
        if not self._keys_known(dhchap_key, dhchap_ctrlr_key):
            raise RpcError(-22, "Invalid argument")
        sub["hosts"] = [self._host_entry(host, dhchap_key, dhchap_ctrlr_key) if h["nqn"] == host else h
                        for h in sub["hosts"]]
        return True

    def _keys_known(self, *names) -> bool:
        return all(n is None or n in self.keyring for n in names)

    @staticmethod
    def _host_entry(host, key, ctrlr_key) -> dict:
        entry = {"nqn": host}
        if key:
            entry["dhchap_key"] = key
        if ctrlr_key:
            entry["dhchap_ctrlr_key"] = ctrlr_key
        return entry

    def nvmf_subsystem_remove_host(self, nqn, host, tgt_name=None):
        sub = self.subsystems.get(nqn)
        if sub is None:
            raise RpcError(*INVALID_PARAMS)
        if all(h["nqn"] != host for h in sub["hosts"]):
            raise RpcError(*INTERNAL)
        sub["hosts"] = [h for h in sub["hosts"] if h["nqn"] != host]
        return True

    def nvmf_subsystem_add_listener(self, nqn, listen_address, **_):
        sub = self.subsystems.get(nqn)
        address = _listener(listen_address)
        if sub is None or address is None or address["trtype"] not in self.transports \
                or address in sub["listen_addresses"]:
            raise RpcError(*INVALID_PARAMS)
        sub["listen_addresses"].append(address)
        return True

    def nvmf_subsystem_remove_listener(self, nqn, listen_address, tgt_name=None):
        sub = self.subsystems.get(nqn)
        address = _listener(listen_address)
        if sub is None or address not in sub["listen_addresses"]:
            raise RpcError(*INVALID_PARAMS)
        sub["listen_addresses"].remove(address)
        return True

    # ----------------------------------------------------------------- helpers
    def _bdev_exists(self, name: str) -> bool:
        return self._find_bdev(name) is not None

    def _find_bdev(self, name: str):
        if name in self.bases:
            return self.bases[name]
        for lvs in self.lvstores.values():
            for lv in lvs.lvols.values():
                if name in (lv.uuid, f"{lvs.name}/{lv.name}"):
                    return lvs, lv
        return None

    def _lvol(self, name: str) -> tuple[Lvstore, Lvol]:
        found = self._find_bdev(name)
        if not isinstance(found, tuple):
            raise RpcError(*NO_DEVICE)
        return found

    def _exported(self, lv: Lvol) -> bool:
        return any(n["bdev_name"] == lv.uuid for s in self.subsystems.values() for n in s["namespaces"])

    def _hot_remove(self, lv: Lvol) -> None:
        for sub in self.subsystems.values():
            sub["namespaces"] = [n for n in sub["namespaces"] if n["bdev_name"] != lv.uuid]

    def _bdev_json(self, found) -> dict:
        if isinstance(found, BaseBdev) and found.kind == "aio":
            out = json.loads(json.dumps(self.templates["aio_bdev"]))
            out.update(name=found.name, aliases=[found.uuid], block_size=found.block_size,
                       num_blocks=found.size // found.block_size, uuid=found.uuid,
                       claimed=any(s.base == found.name for s in self.lvstores.values()))
            out["driver_specific"]["aio"].update(filename=found.disk, block_size_override=found.override)
            return out
        if not isinstance(found, tuple):
            return {"name": found.name, "aliases": [], "product_name": "AIO disk" if found.kind == "aio"
                    else "Malloc disk", "block_size": found.block_size, "num_blocks": found.size // found.block_size,
                    "uuid": found.uuid, "claimed": any(s.base == found.name for s in self.lvstores.values())}
        lvs, lv = found
        out = json.loads(json.dumps(self.templates["lvol_bdev"]))
        block = self.bases[lvs.base].block_size
        out.update(name=lv.uuid, aliases=[f"{lvs.name}/{lv.name}"], num_blocks=lv.size // block,
                   block_size=block, uuid=lv.uuid, assigned_rate_limits=dict(lv.qos))
        out.pop("claim_type", None)
        out["claimed"] = self._exported(lv)
        if self._exported(lv):
            out["claim_type"] = "exclusive_write"
            # keep the key order of the real answer
            out = {k: out[k] for k in [*self.templates["lvol_bdev"]] if k in out}
        detail = {"lvol_store_uuid": lvs.uuid, "base_bdev": lvs.base, "thin_provision": lv.thin,
                  "num_allocated_clusters": 0 if lv.thin else lv.size // lvs.cluster, "snapshot": lv.snapshot,
                  "clone": lv.parent is not None}
        if lv.parent is not None:
            detail["base_snapshot"] = lv.parent.name
        detail["esnap_clone"] = False
        out["driver_specific"] = {"lvol": detail}
        return out


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
        return True
    except (ValueError, TypeError, AttributeError):
        return False


def _listener(address: dict) -> dict | None:
    try:
        ipaddress.ip_address(address["traddr"])
    except (KeyError, ValueError):
        return None
    return {"trtype": address.get("trtype", "").upper(), "adrfam": address.get("adrfam", "IPv4"),
            "traddr": address["traddr"], "trsvcid": str(address.get("trsvcid", ""))}


class FakeSpdkServer:
    """FakeSpdk behind a unix socket, speaking SPDK's JSON-RPC framing (a stream of JSON
    objects). `restart()` drops every connection and forgets what nvmf_tgt forgets."""

    def __init__(self, path: Path, target: FakeSpdk | None = None) -> None:
        self.path = path
        self.target = target or FakeSpdk()
        self.lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self.start()

    def start(self) -> None:
        if self.path.exists():
            os.unlink(self.path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self.path))
        self._sock.listen(16)
        threading.Thread(target=self._accept, args=(self._sock,), daemon=True).start()

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()
        if self.path.exists():
            os.unlink(self.path)

    def restart(self) -> None:
        self.down()
        self.up()

    def down(self) -> None:
        """nvmf_tgt killed: the socket is gone, and so is everything it kept in memory."""
        self.stop()
        with self.lock:
            self.target.restart()

    def up(self) -> None:
        self.start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        decoder, buf = json.JSONDecoder(), ""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data.decode()
            while buf.strip():
                try:
                    request, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                reply = {"jsonrpc": "2.0", "id": request.get("id")}
                with self.lock:
                    try:
                        reply["result"] = self.target.handle(request["method"], request.get("params"))
                    except RpcError as err:
                        reply["error"] = {"code": err.code, "message": err.message}
                try:
                    conn.sendall(json.dumps(reply).encode())
                except OSError:
                    return
