"""Record what a real nvmf_tgt answers about limits, restarts and aio block sizes, for
tests/fixtures/spdk/rpc-transcript-v26.05-limits.jsonl (replayed against the fake by
tests/unit/test_spdk_fake.py).

    python -m tests.fakes.spdk_record /path/to/nvmf_tgt OUT.jsonl

It starts its own nvmf_tgt (--no-huge --no-pci --interrupt-mode) in a temporary
directory, on a 2 GiB sparse file; a line labelled "restart: ..." follows a kill and a
fresh start of the target. Lines are {label, request, response, expect_error}.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from tests.fakes.spdk_real import RealSpdkServer, raw_call

GiB = 1 << 30
NQN = "nqn.2016-06.io.spdk:lim"
HOST = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"
LIMIT = {"rw_ios_per_sec": 2000, "w_mbytes_per_sec": 5}
CLEAR = {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0, "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0}


def steps(image: str, port: str) -> list:
    """(label, method, params, expect_error); "RESTART" kills and starts the target."""
    listener = {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port}
    return [
        ("aio on a file without block_size (cannot detect one)", "bdev_aio_create",
         {"name": "aio0", "filename": image}, True),
        ("aio on a file with block_size 4096", "bdev_aio_create", {"name": "aio0", "filename": image,
                                                                    "block_size": 4096}, False),
        ("aio base bdev shows its block size", "bdev_get_bdevs", {"name": "aio0"}, False),
        ("lvstore", "bdev_lvol_create_lvstore", {"bdev_name": "aio0", "lvs_name": "lvs"}, False),
        ("transport", "nvmf_create_transport", {"trtype": "TCP"}, False),
        ("lvol a (never exported)", "bdev_lvol_create", {"lvol_name": "a", "size_in_mib": 64, "lvs_name": "lvs",
                                                          "thin_provision": True}, False),
        ("limit a first time, no channel", "bdev_set_qos_limit", {"name": "lvs/a", **LIMIT}, False),
        ("a shows the limit", "bdev_get_bdevs", {"name": "lvs/a"}, False),
        ("change a's limit, no channel", "bdev_set_qos_limit", {"name": "lvs/a", "rw_ios_per_sec": 3000}, True),
        ("clear a's limit, no channel", "bdev_set_qos_limit", {"name": "lvs/a", **CLEAR}, True),
        ("a still shows the first limit", "bdev_get_bdevs", {"name": "lvs/a"}, False),
        ("lvol b (exported)", "bdev_lvol_create", {"lvol_name": "b", "size_in_mib": 64, "lvs_name": "lvs",
                                                    "thin_provision": True}, False),
        ("subsystem for b", "nvmf_create_subsystem", {"nqn": NQN, "allow_any_host": False}, False),
        ("namespace b", "nvmf_subsystem_add_ns", {"nqn": NQN, "namespace": {"bdev_name": "lvs/b"}}, False),
        ("listener", "nvmf_subsystem_add_listener", {"nqn": NQN, "listen_address": listener}, False),
        ("host", "nvmf_subsystem_add_host", {"nqn": NQN, "host": HOST}, False),
        ("limit b exported", "bdev_set_qos_limit", {"name": "lvs/b", **LIMIT}, False),
        ("change b exported", "bdev_set_qos_limit", {"name": "lvs/b", "rw_ios_per_sec": 3000}, False),
        ("b shows the change", "bdev_get_bdevs", {"name": "lvs/b"}, False),
        ("clear b exported", "bdev_set_qos_limit", {"name": "lvs/b", **CLEAR}, False),
        ("limit b again after clearing", "bdev_set_qos_limit", {"name": "lvs/b", **LIMIT}, False),
        ("b shows the new limit", "bdev_get_bdevs", {"name": "lvs/b"}, False),
        ("unexport b", "nvmf_delete_subsystem", {"nqn": NQN}, False),
        ("change b after unexport", "bdev_set_qos_limit", {"name": "lvs/b", "rw_ios_per_sec": 4000}, True),
        ("b keeps its limit after unexport", "bdev_get_bdevs", {"name": "lvs/b"}, False),
        ("export a (has a limit, no channel until now)", "nvmf_create_subsystem",
         {"nqn": NQN, "allow_any_host": False}, False),
        ("namespace a", "nvmf_subsystem_add_ns", {"nqn": NQN, "namespace": {"bdev_name": "lvs/a"}}, False),
        ("change a once exported", "bdev_set_qos_limit", {"name": "lvs/a", "rw_ios_per_sec": 3000}, False),
        ("a shows the change", "bdev_get_bdevs", {"name": "lvs/a"}, False),
        "RESTART",
        ("restart: transports are gone", "nvmf_get_transports", None, False),
        ("restart: bdevs are gone", "bdev_get_bdevs", None, False),
        ("restart: lvstores are gone", "bdev_lvol_get_lvstores", None, False),
        ("restart: aio again brings the lvstore back", "bdev_aio_create",
         {"name": "aio0", "filename": image, "block_size": 4096}, False),
        ("restart: lvstore is back", "bdev_lvol_get_lvstores", None, False),
        ("restart: a has no limit", "bdev_get_bdevs", {"name": "lvs/a"}, False),
        ("restart: limit a, no channel", "bdev_set_qos_limit", {"name": "lvs/a", **LIMIT}, False),
        ("restart: the same limit again, no channel", "bdev_set_qos_limit", {"name": "lvs/a", **LIMIT}, True),
        ("restart: transport", "nvmf_create_transport", {"trtype": "TCP"}, False),
        ("restart: subsystem", "nvmf_create_subsystem", {"nqn": NQN, "allow_any_host": False}, False),
        ("restart: namespace a", "nvmf_subsystem_add_ns", {"nqn": NQN, "namespace": {"bdev_name": "lvs/a"}}, False),
        ("restart: change a once exported", "bdev_set_qos_limit", {"name": "lvs/a", "rw_ios_per_sec": 5000}, False),
        ("restart: a shows it", "bdev_get_bdevs", {"name": "lvs/a"}, False),
    ]


def record(nvmf_tgt: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RealSpdkServer(Path(tmp), 2 * GiB, binary=nvmf_tgt)
        lines = []
        try:
            for n, step in enumerate(steps(server.image, "4420"), start=1):
                if step == "RESTART":
                    server.restart()
                    continue
                label, method, params, expect_error = step
                request = {"jsonrpc": "2.0", "method": method, "id": n}
                if params is not None:
                    request["params"] = params
                response = raw_call(server.path, method, params)
                response["id"] = n
                lines.append({"label": label, "request": request, "response": response,
                              "expect_error": expect_error})
                print(label, "->", json.dumps(response)[:200])
        finally:
            server.stop()
        text = "\n".join(json.dumps(line).replace(tmp, "/var/lib/spdk-data") for line in lines)
        out.write_text(text + "\n")


if __name__ == "__main__":
    record(sys.argv[1], Path(sys.argv[2]))
