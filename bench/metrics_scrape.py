"""Cost of a node plugin scrape with many staged volumes, on the host.

Builds what the node plugin reads for N staged volumes, each published to one pod (a
/sys/block namespace device and its /proc/diskstats line, a /sys/class/nvme controller, the pod's cgroup
v2 files, the staging records), then serves /metrics with the real NodeCollector over
HTTP and times GETs (median and p95 of `--rounds`; the CPU time of the process per GET,
which a loaded machine inflates less than wall time), and reports the process's RSS. The
files are on tmpfs, not sysfs: this measures the collector's own cost, not the kernel's.

    .venv/bin/python bench/metrics_scrape.py [--volumes 50] [--rounds 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry, start_http_server  # noqa: E402

from csi_driver.node import fabrics  # noqa: E402
from csi_driver.node import metrics as node_metrics  # noqa: E402
from csi_driver.node.path_events import PathEvents  # noqa: E402
from csi_driver.node.staging import StagingRecord, StagingStore  # noqa: E402


def build(root: Path, volumes: int) -> StagingStore:
    store = StagingStore(root / "state")
    cgroup = root / "cgroup"
    cgroup.mkdir()
    (cgroup / "cgroup.controllers").write_text("cpu io memory pids\n")
    diskstats = []
    for i in range(volumes):
        ns_uuid, pod_uid, nqn = str(uuid.uuid4()), str(uuid.uuid4()), f"nqn.2026-01.dev.sluice:v{i}"
        disk = root / "block" / f"nvme{i}n1"
        disk.mkdir(parents=True)
        for name, text in (("uuid", ns_uuid), ("dev", f"259:{i}"), ("size", "131072"),
                           ("stat", "100 0 2048 50 40 0 8192 400 3 300 450 0 0 0 0 0 0")):
            (disk / name).write_text(text + "\n")
        diskstats.append(f" 259 {i:7d} nvme{i}n1 100 0 2048 50 40 0 8192 400 3 300 450 0 0 0 0 0 0")
        ctrl = root / "nvme" / f"nvme{i}"
        ctrl.mkdir(parents=True)
        for name, text in (("subsysnqn", nqn), ("state", "live"), ("address", "traddr=10.0.0.5,trsvcid=4420")):
            (ctrl / name).write_text(text + "\n")
        pod = cgroup / "kubepods.slice/kubepods-burstable.slice" / f"kubepods-burstable-pod{pod_uid.replace('-', '_')}.slice"
        pod.mkdir(parents=True)
        (pod / "io.max").write_text(f"259:{i} rbps=max wbps=4194304 riops=max wiops=max\n")
        (pod / "io.stat").write_text(f"259:{i} rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n")
        (pod / "io.pressure").write_text("some avg10=0 avg60=0 avg300=0 total=5\nfull avg10=0 avg60=0 avg300=0 total=1\n")
        (root / "staging").mkdir(exist_ok=True)
        record = StagingRecord(f"v-{i:04d}", str(root / "staging" / f"v{i}"), nqn, ns_uuid, "10.0.0.5:4420", "block",
                               qos={"qos.writeBPS": "4194304"})
        store.save(record.with_publication(f"/pods/{i}/vol", pod_uid))
    (root / "diskstats").write_text("\n".join(diskstats) + "\n")
    node_metrics.SYS_BLOCK, fabrics.SYS_NVME = root / "block", root / "nvme"
    node_metrics.DISKSTATS = root / "diskstats"
    return store


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--volumes", type=int, default=50)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--port", type=int, default=19899)
    ns = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp), ns.volumes)
        registry = CollectorRegistry()
        registry.register(node_metrics.NodeCollector(store, Path(tmp) / "cgroup", PathEvents()))
        server, _ = start_http_server(ns.port, addr="127.0.0.1", registry=registry)
        times, cpu, size = [], [], 0
        for _ in range(ns.rounds):
            started, cpu_started = time.perf_counter(), time.process_time()
            with urllib.request.urlopen(f"http://127.0.0.1:{ns.port}/metrics") as reply:
                size = len(reply.read())
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        server.shutdown()
    times.sort()
    print(f"METRICS-SCRAPE volumes={ns.volumes} rounds={ns.rounds} median={statistics.median(times) * 1000:.1f}ms "
          f"p95={times[int(0.95 * (len(times) - 1))] * 1000:.1f}ms cpu={statistics.median(cpu) * 1000:.1f}ms "
          f"load={os.getloadavg()[0]:.1f} body={size} bytes rss={rss_mib():.1f}MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
