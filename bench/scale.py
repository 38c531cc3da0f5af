"""One target with many volumes, through the agent over gRPC as the controller uses it.

Runs inside the lab VM (`make bench`; BENCH_SCALE_VOLUMES, default 1000). Measures:
  - CreateVolume time around the 1,000th volume vs around the 10th (goal <= 1.5);
  - a ListVolumes full walk with limit 100: time per entry at 100 volumes vs at all of
    them (flat is the goal: each page is answered from the agent's index);
  - the agent's RSS with no volumes and with all of them.
Prints the ratios; raw numbers go to $LAB_OUT/bench-scale.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nvme_target.agent.client import AgentClient  # noqa: E402
from tests.lab.kernel import sh, wait_for  # noqa: E402

VG, POOL = "scalevg", "pool"
DISK = os.environ.get("BENCH_SCALE_DISK", "/dev/vdd")  # the other benchmarks use vda..vdc
VOLUMES = int(os.environ.get("BENCH_SCALE_VOLUMES", "1000"))
SIZE = 4 << 20
WINDOW = 10  # creates averaged around each point


def lvm(command: str, *args: str, check: bool = True):
    return sh(command, "--devices", DISK, *args, check=check, timeout=600)


def setup() -> None:
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "dm-thin-pool")
    lvm("pvcreate", "-q", "-ff", "-y", DISK)
    lvm("vgcreate", "-q", VG, DISK)
    lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "8G", "-n", POOL, VG)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def walk(client: AgentClient) -> tuple[int, float]:
    """A full ListVolumes walk, 100 per page: (entries, seconds)."""
    t0, seen, after = time.perf_counter(), 0, ""
    while True:
        page = client.list_volumes(start_after=after, limit=100)
        seen += len(page)
        if len(page) < 100:
            return seen, time.perf_counter() - t0
        after = page[-1].id


def main() -> int:
    setup()
    work = Path("/tmp/bench-scale")
    work.mkdir(exist_ok=True)
    sock = work / "agent.sock"
    agent = subprocess.Popen([sys.executable, "-m", "nvme_target", "--vg", VG, "--pool", POOL, "--pv", DISK,
                              "--state-dir", str(work / "state"), "--socket", str(sock),
                              "--portal", "127.0.0.1:4420", "--log-level", "warning",
                              "--overcommit-ratio", "4"])
    client = AgentClient(f"unix:{sock}", timeout=600)
    wait_for(lambda: _ready(client), 600, "agent")
    rss_empty = rss_kib(agent.pid)
    creates: list[float] = []
    walks: dict[int, tuple[int, float]] = {}
    for i in range(VOLUMES):
        t0 = time.perf_counter()
        client.create_volume(f"scale-{i:05d}", SIZE)
        creates.append(time.perf_counter() - t0)
        if i + 1 in (100, VOLUMES):
            walks[i + 1] = walk(client)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1} volumes, last create {creates[-1] * 1000:.0f} ms", flush=True)
    rss_full = rss_kib(agent.pid)
    agent.terminate()
    agent.wait()

    early = statistics.median(creates[5:5 + WINDOW])        # around the 10th
    late = statistics.median(creates[-WINDOW:])              # around the last
    per_entry = {n: s / max(1, count) for n, (count, s) in walks.items()}
    walk_ratio = per_entry[VOLUMES] / per_entry[100] if 100 in per_entry and VOLUMES in per_entry else 0.0
    print(f"one target, {VOLUMES} volumes through the agent (lab VM, TCG):")
    print(f"  CreateVolume median around the 10th: {early * 1000:7.0f} ms, around the {VOLUMES}th: "
          f"{late * 1000:7.0f} ms; ratio {late / early:.2f} (goal <= 1.50)")
    for n, (count, seconds) in sorted(walks.items()):
        print(f"  ListVolumes walk (limit 100) at {n} volumes: {count} entries in {seconds * 1000:.0f} ms, "
              f"{per_entry[n] * 1e6:.0f} us per entry")
    print(f"  walk time per entry, {VOLUMES} vs 100 volumes: ratio {walk_ratio:.2f} (goal: flat, ~1)")
    print(f"  agent RSS: {rss_empty / 1024:.0f} MiB empty, {rss_full / 1024:.0f} MiB with {VOLUMES} volumes")
    out = os.environ.get("LAB_OUT")
    if out:
        Path(out, "bench-scale.json").write_text(json.dumps({
            "volumes": VOLUMES, "create_s": [round(x, 4) for x in creates], "create_ratio": late / early,
            "walks": {str(n): {"entries": c, "seconds": s} for n, (c, s) in walks.items()},
            "walk_per_entry_ratio": walk_ratio, "rss_kib": {"empty": rss_empty, "full": rss_full}}, indent=1))
    lvm("vgremove", "-q", "-f", VG, check=False)
    return 0


def _ready(client: AgentClient) -> bool:
    try:
        return client.health().ready
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
