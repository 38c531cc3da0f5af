"""NodeStageVolume (mount, ext4) through the node plugin vs the same steps by hand.

Runs inside the lab VM (`make bench`). Each round times, side by side, on two volumes
exported the same way:
  plugin — NodeStageVolume over the node plugin's gRPC socket (connect through
           /dev/nvme-fabrics, find the namespace by UUID, mkfs.ext4, mount);
  raw    — the same steps by hand: write the connect string to /dev/nvme-fabrics, poll
           sysfs for the namespace, mkfs.ext4, mount.
Rounds alternate the two so drift hits both. Prints the medians and plugin/raw.

Then the plugin's idle footprint: 50 volumes staged (Block) and published to 50 pods with
limits (io.max lines to keep), and the plugin's RSS and CPU% over 60 s of idle (goal:
<= 80 MB, <= 2% of a core). BENCH_IDLE_VOLUMES / BENCH_IDLE_SECONDS change the numbers.
With those volumes still staged, the latency of the plugin's own /metrics endpoint over
BENCH_SCRAPES GETs (median and max; goal < 100 ms), each checked to carry every volume,
side by side with the time to read by hand the kernel files a scrape must read live.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import report  # noqa: E402
from csi_driver.node.filesystems import MKFS  # noqa: E402
from nvme_target.agent.client import AgentClient  # noqa: E402
from sluice_proto import csi_pb2 as pb  # noqa: E402
from tests.conformance.client import mount_cap  # noqa: E402
from tests.lab.kernel import (  # noqa: E402
    block_device_with_uuid, controllers_for, delete_controller, fabrics_connect, lvm, sh, wait_for,
)
from tests.lab.processes import AgentProcess, NodeProcess  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
IDLE_VOLUMES = int(os.environ.get("BENCH_IDLE_VOLUMES", "50"))
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "60"))
SCRAPES = int(os.environ.get("BENCH_SCRAPES", "20"))
METRICS_PORT = 19897
SCRAPE_TIMEOUT = 60.0
MiB = 1 << 20


def setup() -> tuple[AgentProcess, NodeProcess]:
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "dm-thin-pool")
    lvm("pvcreate", "-q", "/dev/vdb")  # vdb: the create+export bench may have used vda
    lvm("vgcreate", "-q", "nodebench", "/dev/vdb")
    lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "8G", "-n", "pool", "nodebench")
    work = Path("/tmp/bench-node")
    agent = AgentProcess(work / "agent", "nodebench", "pool", "/dev/vdb", target_id="local",
                         portal="127.0.0.1:4430")
    agent.start()
    node = NodeProcess(work / "node", metrics_port=METRICS_PORT)
    node.start()
    return agent, node


def exported(client: AgentClient, name: str, host_nqn: str, size: int = 256 * MiB):
    vol = client.create_volume(name, size)
    return vol, client.export_volume(vol.id, [host_nqn])


def plugin_stage(stub, vol, export, path: str) -> float:
    portal = export.portals[0]
    ctx = {"nvme.transport": "tcp", "nvme.portals": f"{portal.traddr}:{portal.trsvcid}",
           "nvme.subnqn": export.subsystem_nqn, "nvme.nsUUID": export.namespace_uuid, "readonly": "false"}
    t0 = time.perf_counter()
    stub.NodeStageVolume(pb.NodeStageVolumeRequest(volume_id=f"local/{vol.id}", publish_context=ctx,
                                                   staging_target_path=path, volume_capability=mount_cap()),
                         timeout=300)
    return time.perf_counter() - t0


def raw_stage(export, host_nqn: str, path: str) -> float:
    portal = export.portals[0]
    t0 = time.perf_counter()
    fabrics_connect(f"transport=tcp,traddr={portal.traddr},trsvcid={portal.trsvcid},"
                    f"nqn={export.subsystem_nqn},hostnqn={host_nqn}")
    disk = wait_for(lambda: block_device_with_uuid(export.namespace_uuid), 60, "namespace", interval=0.005)
    sh(*MKFS["ext4"], f"/dev/{disk}")
    os.makedirs(path, exist_ok=True)
    sh("mount", "-t", "ext4", f"/dev/{disk}", path)
    return time.perf_counter() - t0


def idle_footprint(agent: AgentProcess, node: NodeProcess, stub,
                   host_nqn: str) -> tuple[float, float, list[float], float]:
    """(RSS MB, CPU % of one core, /metrics scrape seconds, seconds to read by hand the
    kernel files a scrape reads) of the node plugin over
    IDLE_SECONDS with IDLE_VOLUMES staged and published to pods with limits; then tears
    them down."""
    from tests.conformance.client import block_cap
    from tests.lab.pods import make_pod

    cap, used = block_cap(), []
    for i in range(IDLE_VOLUMES):
        vol, export = exported(agent.client, f"bench-idle-{i}", host_nqn, 64 * MiB)
        portal, pod = export.portals[0], make_pod()
        ctx = {"nvme.portals": f"{portal.traddr}:{portal.trsvcid}", "nvme.subnqn": export.subsystem_nqn,
               "nvme.nsUUID": export.namespace_uuid, "readonly": "false", "qos.readIOPS": "1000"}
        vid, staging, target = f"local/{vol.id}", f"/tmp/bench-node/idle-{i}", f"/tmp/bench-node/idle-{i}-pod"
        stub.NodeStageVolume(pb.NodeStageVolumeRequest(volume_id=vid, publish_context=ctx, staging_target_path=staging,
                                                       volume_capability=cap), timeout=300)
        stub.NodePublishVolume(pb.NodePublishVolumeRequest(
            volume_id=vid, publish_context=ctx, staging_target_path=staging, target_path=target,
            volume_capability=cap, volume_context={"csi.storage.k8s.io/pod.uid": pod.uid}), timeout=300)
        used.append((vid, staging, target, pod))
    time.sleep(5)  # let the publish burst settle
    pid, tick = node.proc.pid, os.sysconf("SC_CLK_TCK")
    cpu0, t0 = _cpu_seconds(pid, tick), time.monotonic()
    time.sleep(IDLE_SECONDS)
    cpu = (_cpu_seconds(pid, tick) - cpu0) / (time.monotonic() - t0) * 100
    rss = _rss_mb(pid)
    print(f"  idle: RSS {rss:.1f} MB, CPU {cpu:.2f}% of a core", flush=True)  # kept even if a scrape fails
    scrapes, by_hand = [], []
    for _ in range(SCRAPES):  # side by side: a scrape, then the kernel files it must read, by hand
        scrapes.append(_scrape(len(used)))
        by_hand.append(_read_by_hand([pod for *_, pod in used]))
    floor = statistics.median(by_hand)
    print(f"  reading by hand what a scrape must read live (/proc/diskstats, each controller's state, each "
          f"pod's io.max, io.stat, io.pressure): median {floor * 1000:.1f} ms", flush=True)
    for vid, staging, target, pod in used:
        stub.NodeUnpublishVolume(pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target), timeout=300)
        stub.NodeUnstageVolume(pb.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=staging), timeout=300)
        pod.remove()
    return rss, cpu, scrapes, floor


def _scrape(volumes: int) -> float:
    """Seconds one GET of the node plugin's /metrics takes (inf: no answer within
    SCRAPE_TIMEOUT); the page must carry every staged volume as attached (a fast empty
    page measures nothing)."""
    import urllib.request

    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=SCRAPE_TIMEOUT) as resp:
            page = resp.read().decode()
    except TimeoutError:
        print(f"  /metrics: no answer within {SCRAPE_TIMEOUT:g} s", flush=True)
        return float("inf")
    took = time.perf_counter() - t0
    attached = sum(1 for line in page.splitlines()
                   if line.startswith("sluice_node_volume_attached{") and line.endswith(" 1.0"))
    if attached != volumes:
        raise RuntimeError(f"/metrics shows {attached} attached volumes, {volumes} are staged")
    return took


def _read_by_hand(pods: list) -> float:
    """Seconds to read, in this process, the kernel files a scrape reads live: the floor
    of a scrape on this (TCG) machine, before any Python builds a metric."""
    t0 = time.perf_counter()
    Path("/proc/diskstats").read_text()
    for ctrl in Path("/sys/class/nvme").iterdir():
        (ctrl / "state").read_text()
    for pod in pods:
        for name in ("io.max", "io.stat", "io.pressure"):
            (pod.cgroup / name).read_text()
    return time.perf_counter() - t0


def _cpu_seconds(pid: int, tick: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    import grpc

    from csi_driver.node.hostid import load_or_create
    from sluice_proto import csi_pb2_grpc

    agent, node = setup()
    channel = grpc.insecure_channel(f"unix:{node.endpoint}")
    stub = csi_pb2_grpc.NodeStub(channel)
    plugin_nqn = stub.NodeGetInfo(pb.NodeGetInfoRequest()).node_id
    raw_nqn = load_or_create(Path("/tmp/bench-node/raw-nvme")).host_nqn
    plugin_t, raw_t = [], []
    for i in range(ROUNDS + 1):
        pvol, pexp = exported(agent.client, f"bench-plugin-{i}", plugin_nqn)
        rvol, rexp = exported(agent.client, f"bench-raw-{i}", raw_nqn)
        order = [("plugin", pvol, pexp), ("raw", rvol, rexp)]
        for kind, vol, exp in order if i % 2 else reversed(order):
            path = f"/tmp/bench-node/{kind}-{i}"
            took = plugin_stage(stub, vol, exp, path) if kind == "plugin" else raw_stage(exp, raw_nqn, path)
            if i:  # round 0 warms both paths up
                (plugin_t if kind == "plugin" else raw_t).append(took)
            sh("umount", path)
            sh("udevadm", "settle")
            for ctrl in controllers_for(exp.subsystem_nqn):
                delete_controller(ctrl)
    report("NodeStageVolume (ext4, 256 MiB)", ("gRPC NodeStageVolume", plugin_t),
           ("fabrics write, wait, mkfs, mount", raw_t), goal=1.15, name="node-stage")
    rss, cpu, scrapes, floor = idle_footprint(agent, node, stub, plugin_nqn)
    median, worst = statistics.median(scrapes) * 1000, max(scrapes) * 1000
    print(f"Node plugin idle with {IDLE_VOLUMES} staged+published volumes over {IDLE_SECONDS:.0f} s:")
    print(f"  RSS {rss:.1f} MB (goal <= 80)   CPU {cpu:.2f}% of a core (goal <= 2)")
    print(f"  /metrics scrape over {len(scrapes)} GETs: median {median:.1f} ms, max {worst:.1f} ms (goal < 100); "
          f"{sum(t == float('inf') for t in scrapes)} unanswered within {SCRAPE_TIMEOUT:g} s")
    print(f"  the same kernel files read by hand: median {floor * 1000:.1f} ms; scrape / by hand = {median / 1000 / floor:.1f}")
    out = os.environ.get("LAB_OUT")
    if out:
        Path(out, "bench-node-idle.json").write_text(json.dumps(
            {"volumes": IDLE_VOLUMES, "seconds": IDLE_SECONDS, "rss_mb": round(rss, 1), "cpu_percent": round(cpu, 2),
             "scrapes": len(scrapes), "scrape_median_ms": round(median, 1), "scrape_max_ms": round(worst, 1),
             "files_by_hand_median_ms": round(floor * 1000, 1)}))
    channel.close()
    node.stop()
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
