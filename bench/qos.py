"""The headline figure: does a checkpoint burst wreck inference latency, does a static cap
stop it, and does latency protection stop it without holding the checkpoint back?

Runs inside the lab VM (`make bench`), through the whole CSI path (target agent,
controller, node plugin) with two Block volumes on one target, each published to its
own pod cgroup (laid out as kubelet does it):

  inference   4k random reads, queue depth 1, on a volume holding a "model"
              (qos.class latency, objective qos.latencyTargetUs)
  checkpoint  128k sequential writes, queue depth 32

Six phases, interleaved in rounds (1 2 3 4 5 6, 1 2 3 4 5 6, ...) because the TCG lab is
noisy: 1 inference alone; 2 checkpoint alone, uncapped; 3 both, uncapped; 4 both, static
cap (qos.writeBPS, live); 5 both, protection mode (checkpoint qos.class bulk, no static
cap); 6 checkpoint alone in protection mode. In phases 3-5 inference starts first and the
burst 3 s later; p50/p99 are over the burst window, from fio's per-I/O log. Prints per
phase the median and spread of the per-round figures, the ratios against the goals, and
the time from burst start until inference's 1 s-window p99 is back under the objective
(1.5 x phase 1's p99). Then the accuracy of every static knob. Raw numbers go to
$LAB_OUT/bench-qos.json.
"""

from __future__ import annotations

import json
import os
import statistics
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from csi_driver.node import devices  # noqa: E402
from csi_driver.node.limits import load_protection  # noqa: E402
from tests.conformance.client import MiB, Csi, block_cap  # noqa: E402
from tests.lab.attach import Attached  # noqa: E402
from tests.lab.kernel import sh, wait_for  # noqa: E402
from tests.lab.pods import CGROUP, Pod, make_pod  # noqa: E402
from tests.lab.processes import AgentProcess, ControllerProcess, NodeProcess  # noqa: E402
from tests.lab.workloads import (  # noqa: E402
    burst_bandwidth, clat_log, finished, first_issue_ms, fio_args, inference, logged_burst, logged_inference,
    recovery_seconds, start_burst, window_p99,
)

DISK = os.environ.get("BENCH_QOS_DISK", "/dev/vdc")
SECONDS = int(os.environ.get("BENCH_QOS_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_QOS_ROUNDS", "3"))
CAP = os.environ.get("BENCH_QOS_CAP", "8Mi")  # the checkpoint's qos.writeBPS in the capped phase
LEAD = 3  # seconds inference runs before the burst starts
GOAL = 1.5
TARGET_FACTOR = float(os.environ.get("BENCH_QOS_TARGET_FACTOR", "1.5"))  # objective: x calm mean latency


PHASES = {1: "inference alone", 2: "checkpoint alone, uncapped", 3: "both, uncapped",
          4: f"both, static cap writeBPS={CAP}", 5: "both, protection (no cap)", 6: "checkpoint alone, protection"}


class Bench:
    def __init__(self, ctl: Csi, inf_pod: Pod, inf, ckpt_pod: Pod, ckpt, ckpt_vol, work: Path, state: Path) -> None:
        self.ctl, self.inf_pod, self.inf, self.ckpt_pod, self.ckpt = ctl, inf_pod, inf, ckpt_pod, ckpt
        self.ckpt_vol, self.work, self.state = ckpt_vol, work, state
        self.objective_p99 = 0.0  # 1.5 x phase 1's p99 of round 1 (the recovery line)

    def mode(self, name: str) -> None:
        """uncapped / static / protect: the checkpoint volume's qos, live (ControllerModifyVolume)."""
        wanted = {"uncapped": {"qos.writeBPS": "max", "qos.class": "max"},
                  "static": {"qos.writeBPS": CAP, "qos.class": "max"},
                  "protect": {"qos.writeBPS": "max", "qos.class": "bulk"}}[name]
        self.ctl.modify(self.ckpt_vol.volume_id, wanted)
        device = _device_of(self.ckpt)
        if name == "static":
            wait_for(lambda: _io_max_has(self.ckpt_pod, device, "qos.writeBPS", _bytes(CAP)), 20, "the cap",
                     interval=0.1)
        else:
            wait_for(lambda: "wbps=" not in self.ckpt_pod.io_max(device), 20, "no cap", interval=0.1)

    def alone(self) -> dict:
        return inference(self.inf_pod, self.inf.target, SECONDS, "--size=256M", "--ramp_time=1")

    def ckpt_alone(self) -> dict:
        return {"ckpt_bps": burst_bandwidth(start_burst(self.ckpt_pod, self.ckpt.target, SECONDS))}

    def both(self, tag: str) -> dict:
        """Inference from t=0, the burst from t=LEAD for SECONDS; figures over the burst window."""
        inf_log, ckpt_log = str(self.work / f"{tag}-inf"), str(self.work / f"{tag}-ckpt")
        inf_proc = logged_inference(self.inf_pod, self.inf.target, LEAD + SECONDS + 1, inf_log, "--size=256M")
        time.sleep(LEAD)
        burst = logged_burst(self.ckpt_pod, self.ckpt.target, SECONDS, ckpt_log)
        ceilings = _Sampler(lambda: _wbps(self.ckpt_pod, _device_of(self.ckpt)))
        seen = self._protection_midway()
        ckpt_job, _ = finished(burst), finished(inf_proc)
        ceilings.stop.set()
        log, start = clat_log(inf_log), first_issue_ms(clat_log(ckpt_log))
        end = start + SECONDS * 1000
        window = sorted(lat for t, lat in log if start <= t < end)
        out = {"p50_us": window[len(window) // 2] if window else 0.0, "p99_us": window_p99(log, start, end),
               "ckpt_bps": ckpt_job["write"]["bw_bytes"], "ios": len(window)}
        if self.objective_p99:
            out["recovery_s"] = recovery_seconds(log, start, end, self.objective_p99)
            out["first_under_s"] = _first_under(log, start, end, self.objective_p99)
        if seen:
            out["protection"] = seen
        walls = [v for _, v in ceilings.seen if v is not None]
        out["io_max_wbps_seen"] = {"samples": len(ceilings.seen), "with_wbps": len(walls),
                                   "min": min(walls, default=None), "max": max(walls, default=None)}
        for suffix in ("clat", "lat", "slat"):
            for prefix in (inf_log, ckpt_log):
                Path(f"{prefix}_{suffix}.1.log").unlink(missing_ok=True)
        return out

    def _protection_midway(self) -> dict:
        """What the node's limits report says halfway through the burst."""
        time.sleep(SECONDS / 2)
        return load_protection(self.state)

    def round(self, results: dict[int, list]) -> None:
        self.mode("uncapped")
        self._record(results, 1, self.alone())
        if not self.objective_p99:
            self.objective_p99 = GOAL * results[1][0]["p99_us"]
        self._record(results, 2, self.ckpt_alone())
        self._record(results, 3, self.both("p3"))
        self.mode("static")
        self._record(results, 4, self.both("p4"))
        self.mode("protect")
        self._record(results, 5, self.both("p5"))
        released = time.monotonic()  # inference is idle now: the ceiling goes (work conserving)
        wait_for(lambda: _wbps(self.ckpt_pod, _device_of(self.ckpt)) is None, 30, "the ceiling released",
                 interval=0.1)
        self._record(results, 6, self.ckpt_alone() | {"released_after_s": round(time.monotonic() - released, 2)})

    @staticmethod
    def _record(results: dict[int, list], phase: int, figures: dict) -> None:
        results[phase].append(figures)
        shown = {k: round(v) if isinstance(v, float) and v > 10 else v for k, v in figures.items() if k != "protection"}
        print(f"round {len(results[phase])} phase {phase} ({PHASES[phase]}): {shown}", flush=True)


class _Sampler:
    """read() every 0.2 s on a thread until `stop` is set: [(monotonic time, value)]."""

    def __init__(self, read) -> None:
        self.seen: list[tuple[float, object]] = []
        self.stop = threading.Event()
        threading.Thread(target=self._run, args=(read,), daemon=True).start()

    def _run(self, read) -> None:
        while not self.stop.wait(0.2):
            self.seen.append((time.monotonic(), read()))


def _wbps(pod: Pod, device: str) -> int | None:
    """The wbps of the pod's io.max line for the device (None: none)."""
    for pair in pod.io_max(device).split()[1:]:
        key, _, value = pair.partition("=")
        if key == "wbps" and value != "max":
            return int(value)
    return None


def _first_under(log, start: float, end: float, objective: float) -> float | None:
    """Seconds from burst start to the end of the first 1 s window whose p99 is under the objective."""
    for i in range(int((end - start - 1000) / 100) + 1):
        if window_p99(log, start + i * 100, start + i * 100 + 1000) <= objective:
            return i / 10 + 1.0
    return None


def knob_accuracy(ctl: Csi, vol, pod: Pod, target: str, device: str) -> list[dict]:
    knobs = [("qos.readIOPS", "300", 300, "randread", "4k", "read", "iops"),
             ("qos.writeIOPS", "300", 300, "randwrite", "4k", "write", "iops"),
             ("qos.readBPS", "4Mi", 4 * MiB, "read", "64k", "read", "bw_bytes"),
             ("qos.writeBPS", "4Mi", 4 * MiB, "write", "64k", "write", "bw_bytes")]
    rows = []
    for key, value, cap, rw, bs, side, metric in knobs:
        ctl.modify(vol.volume_id, {k: (value if k == key else "max") for k, *_ in knobs})
        wait_for(lambda k=key, c=cap: _io_max_has(pod, device, k, c), 10, f"{key} in io.max", interval=0.1)
        out = pod.run(*fio_args("knob", target, f"--rw={rw}", f"--bs={bs}", "--iodepth=16", "--time_based",
                                "--runtime=6", "--ramp_time=2"), timeout=300)
        achieved = json.loads(out.stdout)["jobs"][0][side][metric]
        rows.append({"knob": key, "cap": cap, "achieved": achieved, "ratio": achieved / cap})
    return rows


IO_MAX_KEY = {"qos.readIOPS": "riops", "qos.writeIOPS": "wiops", "qos.readBPS": "rbps", "qos.writeBPS": "wbps"}


def _io_max_has(pod: Pod, device: str, key: str, cap: int) -> bool:
    return f"{IO_MAX_KEY[key]}={cap}" in pod.io_max(device)


def _device_of(attached: Attached) -> str:
    return devices.find_by_uuid(attached.publish_context["nvme.nsUUID"])


def try_iocost(device: str, inf_pod: Pod, ckpt_pod: Pod) -> str:
    """Enable iocost on the device and weight the pods; '' when it worked, else why not."""
    majmin = devices.majmin(device)
    try:
        (CGROUP / "io.cost.qos").write_text(f"{majmin} enable=1")
        for pod, weight in ((inf_pod, 10000), (ckpt_pod, 1)):
            (pod.cgroup / "io.weight").write_text(f"default {weight}")
        return ""
    except OSError as exc:
        return f"iocost unavailable: {exc.strerror or exc}"


def main() -> int:
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "dm-thin-pool")
    for command in (("pvcreate", "-q", DISK), ("vgcreate", "-q", "qosbench", DISK),
                    ("lvcreate", "-q", "--type", "thin-pool", "-L", "8G", "-n", "pool", "qosbench")):
        sh(command[0], "--devices", DISK, *command[1:])
    work = Path("/tmp/bench-qos")
    agent = AgentProcess(work / "agent", "qosbench", "pool", DISK, target_id="local", portal="127.0.0.1:4440")
    agent.start()
    controller = ControllerProcess(work / "controller", [agent])
    controller.start()
    node = NodeProcess(work / "node", agents=[agent])
    node.start()
    ctl = Csi(grpc.insecure_channel(f"unix:{controller.endpoint}"))
    nodecsi = Csi(grpc.insecure_channel(f"unix:{node.endpoint}"))
    inf_pod, ckpt_pod = make_pod("systemd", "burstable"), make_pod("systemd", "besteffort")
    inf_vol = ctl.create("bench-inference", size=1024 * MiB, caps=[block_cap()])
    ckpt_vol = ctl.create("bench-checkpoint", size=2048 * MiB, caps=[block_cap()])
    results: dict = {"seconds_per_phase": SECONDS, "cap": CAP, "rounds": ROUNDS}
    phases: dict[int, list] = {n: [] for n in PHASES}
    with Attached(ctl, nodecsi, inf_vol, block_cap(), pod_uid=inf_pod.uid) as inf, \
            Attached(ctl, nodecsi, ckpt_vol, block_cap(), pod_uid=ckpt_pod.uid) as ckpt:
        inf_pod.run("dd", "if=/dev/urandom", f"of={inf.target}", "bs=1M", "count=256", "oflag=direct",
                    timeout=300)  # the "model"
        bench = Bench(ctl, inf_pod, inf, ckpt_pod, ckpt, ckpt_vol, work, work / "node" / "state")
        calm = inference(inf_pod, inf.target, SECONDS, "--size=256M", "--ramp_time=1")
        results["latency_target_us"] = target = max(1, round(TARGET_FACTOR * calm["mean_us"]))
        ctl.modify(inf_vol.volume_id, {"qos.class": "latency", "qos.latencyTargetUs": str(target)})
        for _ in range(ROUNDS):
            bench.round(phases)
        results["phases"] = phases
        results["objective_p99_us"] = bench.objective_p99
        if os.environ.get("BENCH_QOS_IOCOST"):
            bench.mode("uncapped")
            why_not = try_iocost(_device_of(inf), inf_pod, ckpt_pod)
            results["iocost"] = why_not or bench.both("iocost")
        if os.environ.get("BENCH_QOS_KNOBS", "1") != "0":
            bench.mode("uncapped")
            results["knobs"] = knob_accuracy(ctl, ckpt_vol, ckpt_pod, ckpt.target, _device_of(ckpt))
    for vol in (inf_vol, ckpt_vol):
        ctl.delete(vol.volume_id)
    for pod in (inf_pod, ckpt_pod):
        pod.remove()
    node.stop()
    controller.stop()
    agent.empty()
    agent.stop()
    print_report(results)
    if os.environ.get("LAB_OUT"):
        Path(os.environ["LAB_OUT"], "bench-qos.json").write_text(json.dumps(results, indent=1))
        for log in (work / "agent" / "agent.log", work / "node" / "node.log"):
            if log.exists():
                shutil.copy(log, Path(os.environ["LAB_OUT"], f"bench-qos-{log.name}"))
    return 0


def _bytes(quantity: str) -> int:
    from csi_driver import quantity as q
    return q.parse(quantity, "cap")


def summary(rows: list[dict], key: str) -> tuple[float, float, float]:
    """(median, min, max) of one figure over the rounds."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return (statistics.median(values), min(values), max(values)) if values else (float("nan"),) * 3


def print_report(r: dict) -> None:
    ph = {int(k): v for k, v in r["phases"].items()}
    print(f"QoS: inference 4k randread qd1 vs checkpoint 128k seq write qd32, {r['rounds']} rounds of 6 phases, "
          f"{r['seconds_per_phase']} s each (lab VM, TCG); inference objective {r['latency_target_us']} us mean, "
          f"recovery line p99 {r['objective_p99_us']:.0f} us")
    print(f"  {'phase':<38}{'p50 us':>9}{'p99 us median [min-max]':>28}{'ckpt MiB/s median [min-max]':>30}")
    for n, label in PHASES.items():
        lat, p99_, bw = summary(ph[n], "p50_us"), summary(ph[n], "p99_us"), summary(ph[n], "ckpt_bps")
        lat_s = f"{lat[0]:9.0f}{p99_[0]:12.0f} [{p99_[1]:.0f}-{p99_[2]:.0f}]".ljust(46) if n not in (2, 6) else " " * 46
        bw_s = f"{bw[0] / MiB:9.1f} [{bw[1] / MiB:.1f}-{bw[2] / MiB:.1f}]" if n != 1 else ""
        print(f"  {n} {label:<36}{lat_s}{bw_s}")
    alone = summary(ph[1], "p99_us")[0]
    for n in (3, 4, 5):
        print(f"  phase {n} p99 / phase 1 p99 = {summary(ph[n], 'p99_us')[0] / alone:.2f}"
              + ("   (goal <= 1.5, aim 1.2)" if n == 5 else ""))
    per_round5 = [a["p99_us"] and b["p99_us"] / a["p99_us"] for a, b in zip(ph[1], ph[5], strict=True)]
    print(f"  per round phase5/phase1 p99: {', '.join(f'{x:.2f}' for x in per_round5)}")
    full = summary(ph[2], "ckpt_bps")[0]
    print(f"  phase 6 checkpoint / phase 2 = {summary(ph[6], 'ckpt_bps')[0] / full:.2f}   (goal >= 0.9; "
          f"static cap, phase 4: {summary(ph[4], 'ckpt_bps')[0] / full:.2f})")
    rec = [x.get("recovery_s") for x in ph[5]]
    first = [x.get("first_under_s") for x in ph[5]]
    print(f"  phase 5 recovery, burst start until every later 1 s window p99 <= {r['objective_p99_us']:.0f} us: "
          f"{', '.join('never' if x is None else f'{x:.1f} s' for x in rec)}   (goal <= 2 s)")
    print(f"  phase 5, first 1 s window back under it ends at: "
          f"{', '.join('never' if x is None else f'{x:.1f} s' for x in first)}")
    seen5 = [x.get("io_max_wbps_seen", {}) for x in ph[5]]
    print("  phase 5, checkpoint io.max wbps (dynamic ceiling) sampled every 0.2 s: " + "; ".join(
        f"{s.get('with_wbps', 0)}/{s.get('samples', 0)} samples, "
        f"{(s.get('min') or 0) / MiB:.1f}-{(s.get('max') or 0) / MiB:.1f} MiB/s" for s in seen5))
    print("  phase 6, ceiling released after inference stopped: "
          + ", ".join(f"{x.get('released_after_s', float('nan')):.1f} s" for x in ph[6]))
    if "knobs" in r:
        print("  static cap accuracy (direct I/O, fio qd16, 6 s):")
        for k in r["knobs"]:
            print(f"    {k['knob']:<14} cap {k['cap']:>9}  achieved {k['achieved']:>11.1f}  ratio {k['ratio']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
