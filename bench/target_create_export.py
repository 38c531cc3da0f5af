"""Create + export of one volume: through the target agent vs. the same steps by hand.

Runs inside the lab VM (`make bench`). Each round times, side by side:
  agent — AgentClient over the unix socket: CreateVolume, then ExportVolume to one host;
  raw   — `lvcreate` of a thin LV, then the configfs writes for one subsystem with one
          namespace, one allowed host and a port link (what the agent does, by hand).
Rounds alternate the two so drift hits both. Prints the medians and agent/raw.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import lab_agent  # noqa: E402
from bench.report import report  # noqa: E402
from nvme_target.agent.client import AgentClient  # noqa: E402
from tests.lab.kernel import NVMET, lvm, new_host_nqn  # noqa: E402

VG, POOL, DISK = "benchvg", "pool", "/dev/vda"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "8"))
SIZE = "64m"
PORT_ID = "7"


def raw_create_export(i: int, host: str) -> float:
    t0 = time.perf_counter()
    name = f"raw-{i}"
    lvm("lvcreate", "-q", "-V", SIZE, "-T", f"{VG}/{POOL}", "-n", name, "-kn")
    nqn = f"nqn.2026-11.dev.sluice:bench:{name}"
    sub = NVMET / "subsystems" / nqn
    sub.mkdir()
    (sub / "attr_allow_any_host").write_text("0")
    hostdir = NVMET / "hosts" / host
    hostdir.mkdir(exist_ok=True)
    (sub / "allowed_hosts" / host).symlink_to(hostdir)
    ns = sub / "namespaces" / "1"
    ns.mkdir()
    (ns / "device_path").write_text(f"/dev/{VG}/{name}")
    (ns / "device_uuid").write_text(str(uuid.uuid4()))
    (ns / "enable").write_text("1")
    port = NVMET / "ports" / PORT_ID
    if not port.exists():
        port.mkdir()
        for attr, value in (("addr_trtype", "tcp"), ("addr_adrfam", "ipv4"),
                            ("addr_traddr", "127.0.0.1"), ("addr_trsvcid", "4421")):
            (port / attr).write_text(value)
    (port / "subsystems" / nqn).symlink_to(sub)
    return time.perf_counter() - t0


def agent_create_export(client: AgentClient, i: int, host: str) -> float:
    t0 = time.perf_counter()
    vol = client.create_volume(f"bench-{i}", 64 << 20)
    client.export_volume(vol.id, [host])
    return time.perf_counter() - t0


def main() -> int:
    lab_agent.thin_pool(VG, POOL, DISK)
    agent, client = lab_agent.start(Path("/tmp/bench-agent"), VG, POOL, DISK)
    host = new_host_nqn()
    agent_create_export(client, 999, host)  # warm-up: first-call costs on both paths
    raw_create_export(999, host)
    agent_t, raw_t = [], []
    for i in range(ROUNDS):
        if i % 2:
            raw_t.append(raw_create_export(i, host))
            agent_t.append(agent_create_export(client, i, host))
        else:
            agent_t.append(agent_create_export(client, i, host))
            raw_t.append(raw_create_export(i, host))
    lab_agent.stop(agent)
    report("create+export of a volume", ("gRPC CreateVolume + ExportVolume", agent_t),
           ("lvcreate + configfs writes", raw_t), goal=1.30, name="target-create-export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
