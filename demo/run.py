"""`make demo`: Sluice's story on a real kernel, told as Kubernetes would drive it.

Runs inside the lab VM. Starts Sluice in all-in-one mode (controller + node plugin +
an in-process target on an LVM thin pool), then, over the CSI socket:
  1. provisions a "checkpoint" (Block, sluice-checkpoint parameters) and an "inference"
     (ext4, sluice-inference parameters) volume for two pods, writes a "model";
  2. measures inference reads alone, during an uncapped checkpoint burst, with the
     checkpoint capped live and in latency protection mode (checkpoint qos.class bulk,
     no cap; inference qos.class latency), then the checkpoint alone in protection mode;
     prints p50/p99, the dynamic ceiling and its reason, draws the latency timeline (PNG), and
     what the node plugin's /metrics said in each phase (write rate, PSI, read latency);
  3. snapshots the checkpoint, clones it, proves the clone holds the same bytes;
  4. changes the checkpoint's cap live while it writes and shows the rate follow;
  5. expands the inference volume online; tears everything down, shows nothing is left.
Exits non-zero if any step fails. DEMO_SECONDS sets the length of each measured phase.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from csi_driver.node import devices  # noqa: E402
from sluice_proto import csi_pb2 as pb  # noqa: E402
from tests.conformance.client import MiB, Csi, block_cap, mount_cap  # noqa: E402
from tests.lab.attach import Attached  # noqa: E402
from tests.lab.kernel import lvs_json, port_links, sh, sluice_subsystems, wait_for  # noqa: E402
from tests.lab.pods import Pod, make_pod  # noqa: E402
from tests.lab.processes import AllInOneProcess  # noqa: E402
from csi_driver.node.limits import load_protection  # noqa: E402
from csi_driver.node.limits_report import protection_lines  # noqa: E402
from tests.lab.workloads import burst_bandwidth, inference, inference_during_burst, start_burst  # noqa: E402

from demo.scrape import PhaseMetrics, Scrape  # noqa: E402

CHECKPOINT_CLASS = {"qos.writeIOPS": "4000", "nvme.ctrlLossTmo": "120"}   # uncapped bandwidth at first
INFERENCE_CLASS = {"qos.readIOPS": "20000", "nvme.ctrlLossTmo": "30"}
CAP = "8Mi"
METRICS_PORT = 9811   # the node plugin's port in deploy/base


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def lat_log(log: Path) -> tuple[str, ...]:
    return (f"--write_lat_log={log}", "--log_avg_msec=200", "--log_unix_epoch=1")


def lat_samples(log: Path) -> list[tuple[float, float]]:
    path = Path(f"{log}_clat.1.log")
    return [(int(f[0]) / 1000, int(f[1]) / 1000) for f in
            (line.split(",") for line in path.read_text().splitlines() if line.strip())]


def draw(phases: list[tuple[str, list[tuple[float, float]]]], out: Path) -> str:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[demo]'): no PNG"
    start = phases[0][1][0][0]
    fig, ax = plt.subplots(figsize=(10, 4))
    colours = ("#4c72b0", "#c44e52", "#55a868", "#8172b2")
    for (label, samples), colour in zip(phases, colours, strict=False):
        ts = [t - start for t, _ in samples]
        ax.plot(ts, [v for _, v in samples], color=colour, linewidth=1)
        ax.axvspan(ts[0], ts[-1], color=colour, alpha=0.12, label=label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("inference 4k read latency, us (200 ms means)")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    ax.set_title("Sluice: inference latency next to a checkpoint burst")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return f"latency timeline: {out}"


def rate_follows(csi: Csi, vol, pod: Pod, target: str, device: str) -> None:
    log = Path("/tmp/demo-live")
    proc = pod.popen("fio", "--name=live", f"--filename={target}", "--rw=write", "--bs=64k", "--iodepth=16",
                     "--ioengine=libaio", "--direct=1", "--time_based", "--runtime=14",
                     f"--write_bw_log={log}", "--log_avg_msec=1000", "--log_unix_epoch=1")
    time.sleep(4)
    changed = time.time()
    csi.modify(vol.volume_id, {"qos.writeBPS": "4Mi"})
    wait_for(lambda: f"wbps={4 * MiB}" in pod.io_max(device), 5, "the new cap in io.max", interval=0.05)
    say(f"ControllerModifyVolume qos.writeBPS 8Mi -> 4Mi; io.max rewritten {time.time() - changed:.2f} s later")
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(err)
    samples = [(int(f[0]) / 1000, int(f[1]) / 1024) for f in
               (line.split(",") for line in Path(f"{log}_bw.1.log").read_text().splitlines() if line.strip())]
    before = [v for t, v in samples if t < changed]
    after = [v for t, v in samples if t > changed + 3]
    say("write MiB/s per second: " + " ".join(f"{v:.1f}" for _, v in samples))
    b, a = sum(before) / len(before), sum(after) / len(after)
    say(f"before the change {b:.2f} MiB/s, from 3 s after it {a:.2f} MiB/s (cap 4)")
    if abs(a / 4 - 1) > 0.10:
        raise RuntimeError(f"the rate did not follow the new cap: {a:.2f} MiB/s")


def no_wbps(io_max: str) -> bool:
    """Whether a pod's io.max line holds no write-bandwidth limit: the kernel keeps the line,
    with `wbps=max`, while another limit (the checkpoint's writeIOPS) is set."""
    return "wbps=" not in io_max or "wbps=max" in io_max.split()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--disk", default="/dev/vda", help="blank disk for the demo's volume group")
    p.add_argument("--vg", default="", help="use this existing VG (with --pool) instead of --disk")
    p.add_argument("--pool", default="pool")
    p.add_argument("--seconds", type=int, default=int(os.environ.get("DEMO_SECONDS", "10")))
    p.add_argument("--out", type=Path, default=Path(os.environ.get("LAB_OUT", "/tmp")))
    ns = p.parse_args()

    step("0. Sluice in all-in-one mode on a real kernel (controller + node plugin + target)")
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "dm-thin-pool")
    vg, pool, pv = ns.vg, ns.pool, ns.disk
    if not vg:
        vg = "demo"
        for cmd in (("pvcreate", "-q", pv), ("vgcreate", "-q", vg, pv),
                    ("lvcreate", "-q", "--type", "thin-pool", "-L", "8G", "-n", pool, vg)):
            sh(cmd[0], "--devices", pv, *cmd[1:])
    work = Path("/tmp/sluice-demo")
    work.mkdir(parents=True, exist_ok=True)
    proc = AllInOneProcess(work, vg, pool, pv=pv, metrics_port=METRICS_PORT)
    proc.start()
    csi = Csi(grpc.insecure_channel(f"unix:{proc.endpoint}"))
    scrape = Scrape(f"http://127.0.0.1:{METRICS_PORT}/metrics")
    say(f"CSI socket {proc.endpoint}; thin pool {vg}/{pool}; metrics {scrape.url}")
    pods = {"train": make_pod("systemd", "besteffort"), "infer": make_pod("systemd", "burstable")}
    attached: list[Attached] = []
    try:
        step("1. provision, attach, mount; write the model")
        ckpt = csi.create("pvc-checkpoint", size=2048 * MiB, caps=[block_cap()], parameters=CHECKPOINT_CLASS)
        infer = csi.create("pvc-inference", size=512 * MiB, caps=[mount_cap()], parameters=INFERENCE_CLASS)
        for vol, cap, pod in ((ckpt, block_cap(), pods["train"]), (infer, mount_cap(), pods["infer"])):
            attached.append(Attached(csi, csi, vol, cap, pod_uid=pod.uid).__enter__())
            say(f"{vol.volume_id}: {vol.capacity_bytes // MiB} MiB, {dict(vol.volume_context)}")
        a_ckpt, a_infer = attached
        ckpt_dev = devices.find_by_uuid(a_ckpt.publish_context["nvme.nsUUID"])
        model = f"{a_infer.target}/model.bin"
        pods["infer"].run("dd", "if=/dev/urandom", f"of={model}", "bs=1M", "count=256", "conv=fsync")
        say(f"model: 256 MiB at {model}; checkpoint device {ckpt_dev}, io.max: "
            f"{pods['train'].io_max(ckpt_dev) or '(no limit)'}")

        step(f"2. inference reads (4k random, qd1) next to a checkpoint burst (128k seq writes, qd32), "
             f"{ns.seconds} s each")
        logs = [Path(f"/tmp/demo-lat-{i}") for i in range(4)]
        seen: list[PhaseMetrics] = []

        def observed(run):
            """Run one phase between two scrapes of the node plugin's /metrics."""
            before = scrape.sample()
            result = run()
            seen.append(PhaseMetrics.between(before, scrape.sample(), ckpt.volume_id, infer.volume_id))
            return result

        alone = observed(lambda: inference(pods["infer"], model, ns.seconds, *lat_log(logs[0])))
        uncapped, bw_uncapped = observed(lambda: inference_during_burst(
            pods["infer"], model, pods["train"], a_ckpt.target, ns.seconds, *lat_log(logs[1])))
        csi.modify(ckpt.volume_id, {"qos.writeBPS": CAP})
        wait_for(lambda: not no_wbps(pods["train"].io_max(ckpt_dev)), 5, "the cap in io.max", interval=0.05)
        capped, bw_capped = observed(lambda: inference_during_burst(
            pods["infer"], model, pods["train"], a_ckpt.target, ns.seconds, *lat_log(logs[2])))
        target_us = max(1, round(1.5 * alone["mean_us"]))
        csi.modify(ckpt.volume_id, {"qos.writeBPS": "max", "qos.class": "bulk"})
        csi.modify(infer.volume_id, {"qos.class": "latency", "qos.latencyTargetUs": str(target_us)})
        wait_for(lambda: no_wbps(pods["train"].io_max(ckpt_dev)), 5, "the cap gone", interval=0.05)
        protected, bw_protected = observed(lambda: inference_during_burst(
            pods["infer"], model, pods["train"], a_ckpt.target, ns.seconds, *lat_log(logs[3])))
        ceiling_seen = load_protection(work / "node").get("volumes", {}).get(ckpt.volume_id, {})
        wait_for(lambda: no_wbps(pods["train"].io_max(ckpt_dev)), 30, "the ceiling released", interval=0.1)
        bw_idle = burst_bandwidth(start_burst(pods["train"], a_ckpt.target, ns.seconds))
        say(f"{'phase':<40}{'p50 us':>9}{'p99 us':>9}{'p99 vs alone':>14}{'checkpoint MiB/s':>18}")
        for label, lat, bw in (("inference alone", alone, None), ("+ checkpoint, uncapped", uncapped, bw_uncapped),
                               (f"+ checkpoint, writeBPS={CAP} (set live)", capped, bw_capped),
                               (f"+ checkpoint, protection ({target_us} us)", protected, bw_protected),
                               ("checkpoint alone, protection", None, bw_idle)):
            shown = f"{bw / MiB:18.1f}" if bw is not None else f"{'-':>18}"
            if lat is None:
                say(f"{label:<40}{'-':>9}{'-':>9}{'-':>14}{shown}")
                continue
            say(f"{label:<40}{lat['p50_us']:9.0f}{lat['p99_us']:9.0f}{lat['p99_us'] / alone['p99_us']:14.2f}{shown}")
        say("what Sluice's metrics said (node plugin /metrics, scraped before and after each phase):")
        say(f"{'phase':<40}{'ckpt write MiB/s':>17}{'infer read MiB/s':>17}{'infer PSI some':>15}"
            f"{'infer read ms':>14}")
        for label, m in zip(("inference alone", "+ checkpoint, uncapped", f"+ checkpoint, writeBPS={CAP}",
                             "+ checkpoint, protection"), seen, strict=True):
            say(f"{label:<40}{m.ckpt_write_mibs:17.1f}{m.infer_read_mibs:17.1f}{m.infer_psi_some:14.0%} "
                f"{m.infer_read_ms:14.2f}")
        if seen[2].ckpt_write_mibs > 1.5 * float(CAP.removesuffix("Mi")):
            raise RuntimeError(f"the metrics show the checkpoint writing {seen[2].ckpt_write_mibs:.1f} MiB/s "
                               f"past its {CAP}/s cap")
        say("latency protection: checkpoint at the end of the burst, as the node's limits report shows it:")
        for line in protection_lines(ceiling_seen).splitlines():
            say(line)
        say(f"checkpoint alone: {bw_idle / MiB:.1f} MiB/s in protection mode vs {bw_capped / MiB:.1f} MiB/s "
            f"under the static cap (it is squeezed only while inference suffers)")
        csi.modify(ckpt.volume_id, {"qos.class": "max", "qos.writeBPS": CAP})
        say(draw([("alone", lat_samples(logs[0])), ("checkpoint uncapped", lat_samples(logs[1])),
                  (f"checkpoint capped {CAP}/s", lat_samples(logs[2])),
                  ("checkpoint, protection mode", lat_samples(logs[3]))], ns.out / "demo-latency.png"))

        step("3. snapshot the checkpoint, clone it, compare")
        snap = csi.snapshot("snap-checkpoint", ckpt.volume_id)
        source = pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snap.snapshot_id))
        clone = csi.create("pvc-checkpoint-restore", size=2048 * MiB, caps=[block_cap()], source=source)
        a_clone = Attached(csi, csi, clone, block_cap(), pod_uid=pods["train"].uid).__enter__()
        attached.append(a_clone)
        digests = [_digest(a.target) for a in (a_ckpt, a_clone)]
        say(f"snapshot {snap.snapshot_id}; clone {clone.volume_id}")
        say(f"sha256 of the first 64 MiB: checkpoint {digests[0][:16]}…, clone {digests[1][:16]}…")
        if digests[0] != digests[1]:
            raise RuntimeError("the clone does not hold the checkpoint's data")
        a_clone.__exit__(None, None, None)
        attached.remove(a_clone)
        csi.delete(clone.volume_id)
        csi.controller.DeleteSnapshot(pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))

        step("4. change the checkpoint's cap live while it writes")
        rate_follows(csi, ckpt, pods["train"], a_ckpt.target, ckpt_dev)

        step("5. expand the inference volume online; tear down")
        grown = csi.controller.ControllerExpandVolume(pb.ControllerExpandVolumeRequest(
            volume_id=infer.volume_id, capacity_range=pb.CapacityRange(required_bytes=1024 * MiB),
            volume_capability=mount_cap()))
        csi.node.NodeExpandVolume(pb.NodeExpandVolumeRequest(
            volume_id=infer.volume_id, volume_path=a_infer.target, staging_target_path=a_infer.staging,
            capacity_range=pb.CapacityRange(required_bytes=1024 * MiB), volume_capability=mount_cap()))
        st = os.statvfs(a_infer.target)
        say(f"inference volume {grown.capacity_bytes // MiB} MiB; the pod's filesystem now "
            f"{st.f_blocks * st.f_frsize // MiB} MiB, model still there: {os.path.exists(model)}")
    finally:
        for a in reversed(attached):
            a.__exit__(None, None, None)
        for vol_id in csi.all_volume_ids():
            csi.delete(vol_id)
        csi.channel.close()
        proc.stop()
        for pod in pods.values():
            pod.remove()
    left = {"lvs": [lv["lv_name"] for lv in lvs_json(vg) if lv["lv_name"] != pool],
            "nvmet subsystems": sluice_subsystems(), "nvmet port links": port_links(),
            "nvme controllers": sorted(os.listdir("/sys/class/nvme")),
            "mounts": [ln for ln in Path("/proc/mounts").read_text().splitlines() if "kubelet-lab" in ln]}
    say("left behind: " + ", ".join(f"{k}={v}" for k, v in left.items()))
    if any(left.values()):
        raise RuntimeError(f"teardown left {left}")
    print("\nDEMO OK", flush=True)
    return 0


def _digest(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return hashlib.sha256(os.pread(fd, 64 * MiB, 0)).hexdigest()
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
