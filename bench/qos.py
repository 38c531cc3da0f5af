"""The headline figure: does a checkpoint burst wreck inference latency, and does a
write-bandwidth cap on the checkpoint volume stop it?

Runs inside the lab VM (`make bench`), through the whole CSI path (target agent,
controller, node plugin) with two Block volumes on one target, each published to its
own pod cgroup (laid out as kubelet does it):

  inference   4k random reads, queue depth 1, on a volume holding a "model"
  checkpoint  128k sequential writes, queue depth 32

Phases, one run, side by side: inference alone; inference during an uncapped checkpoint
burst; the same after ControllerModifyVolume caps the checkpoint's qos.writeBPS live;
and, as an experiment, the uncapped burst with iocost weights (inference io.weight 10000,
checkpoint 1) instead of a cap. Prints p50/p99 and p99 ratios against alone, then the
accuracy of every knob (achieved/cap, direct I/O). Raw numbers go to $LAB_OUT/bench-qos.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from csi_driver.node import devices  # noqa: E402
from tests.conformance.client import MiB, Csi, block_cap  # noqa: E402
from tests.lab.attach import Attached  # noqa: E402
from tests.lab.kernel import sh, wait_for  # noqa: E402
from tests.lab.pods import CGROUP, Pod, make_pod  # noqa: E402
from tests.lab.processes import AgentProcess, ControllerProcess, NodeProcess  # noqa: E402
from tests.lab.workloads import fio_args, inference, inference_during_burst  # noqa: E402

DISK = os.environ.get("BENCH_QOS_DISK", "/dev/vdc")
SECONDS = int(os.environ.get("BENCH_QOS_SECONDS", "12"))
CAP = os.environ.get("BENCH_QOS_CAP", "8Mi")  # the checkpoint's qos.writeBPS in the capped phase
GOAL = 1.5


def inference_alone(pod: Pod, target: str) -> dict:
    return inference(pod, target, SECONDS, "--size=256M", "--ramp_time=1")


def with_burst(inf_pod: Pod, inf_target: str, ckpt_pod: Pod, ckpt_target: str) -> tuple[dict, float]:
    return inference_during_burst(inf_pod, inf_target, ckpt_pod, ckpt_target, SECONDS, "--size=256M",
                                  "--ramp_time=1")


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
    results: dict = {"seconds_per_phase": SECONDS, "cap": CAP}
    with Attached(ctl, nodecsi, inf_vol, block_cap(), pod_uid=inf_pod.uid) as inf, \
            Attached(ctl, nodecsi, ckpt_vol, block_cap(), pod_uid=ckpt_pod.uid) as ckpt:
        inf_pod.run("dd", "if=/dev/urandom", f"of={inf.target}", "bs=1M", "count=256", "oflag=direct",
                    timeout=300)  # the "model"
        results["alone"] = inference_alone(inf_pod, inf.target)
        results["burst_uncapped"], results["ckpt_bw_uncapped"] = with_burst(inf_pod, inf.target, ckpt_pod,
                                                                            ckpt.target)
        ctl.modify(ckpt_vol.volume_id, {"qos.writeBPS": CAP})
        t0 = time.monotonic()
        wait_for(lambda: _io_max_has(ckpt_pod, _device_of(ckpt), "qos.writeBPS", _bytes(CAP)), 10,
                 "the cap in io.max", interval=0.05)
        results["cap_applied_after_s"] = round(time.monotonic() - t0, 2)
        results["burst_capped"], results["ckpt_bw_capped"] = with_burst(inf_pod, inf.target, ckpt_pod,
                                                                        ckpt.target)
        ctl.modify(ckpt_vol.volume_id, {"qos.writeBPS": "max"})
        wait_for(lambda: "wbps=" not in ckpt_pod.io_max(_device_of(ckpt)), 10, "the cap to go",
                 interval=0.05)
        why_not = try_iocost(_device_of(inf), inf_pod, ckpt_pod)
        if not why_not:
            results["burst_iocost"], results["ckpt_bw_iocost"] = with_burst(inf_pod, inf.target, ckpt_pod,
                                                                            ckpt.target)
            (CGROUP / "io.cost.qos").write_text(f"{devices.majmin(_device_of(inf))} enable=0")
        else:
            results["iocost"] = why_not
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
    return 0


def _bytes(quantity: str) -> int:
    from csi_driver import quantity as q
    return q.parse(quantity, "cap")


def print_report(r: dict) -> None:
    alone = r["alone"]["p99_us"]
    print(f"QoS isolation: inference 4k randread qd1 vs checkpoint 128k seq write qd32, {r['seconds_per_phase']} s "
          "per phase (lab VM, TCG):")
    print(f"  {'phase':<34}{'p50 us':>9}{'p99 us':>9}{'p99/alone':>11}{'ckpt MiB/s':>12}")
    rows = [("inference alone", r["alone"], None),
            ("+ checkpoint, uncapped", r["burst_uncapped"], r["ckpt_bw_uncapped"]),
            (f"+ checkpoint, writeBPS={r['cap']} (live)", r["burst_capped"], r["ckpt_bw_capped"])]
    if "burst_iocost" in r:
        rows.append(("+ checkpoint, iocost weights", r["burst_iocost"], r["ckpt_bw_iocost"]))
    for label, lat, bw in rows:
        ckpt = f"{bw / MiB:12.1f}" if bw is not None else f"{'-':>12}"
        print(f"  {label:<34}{lat['p50_us']:9.0f}{lat['p99_us']:9.0f}{lat['p99_us'] / alone:11.2f}{ckpt}")
    capped, uncapped = r["burst_capped"]["p99_us"] / alone, r["burst_uncapped"]["p99_us"] / alone
    print(f"  p99(burst, capped)/p99(alone) = {capped:.2f}   (goal <= {GOAL})")
    print(f"  p99(burst, uncapped)/p99(alone) = {uncapped:.2f}")
    print(f"  live cap in io.max {r['cap_applied_after_s']} s after ControllerModifyVolume returned")
    if "iocost" in r:
        print(f"  {r['iocost']}")
    print("  cap accuracy (direct I/O, fio qd16, 6 s):")
    for k in r["knobs"]:
        print(f"    {k['knob']:<14} cap {k['cap']:>9}  achieved {k['achieved']:>11.1f}  ratio {k['ratio']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
