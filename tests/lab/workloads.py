"""The two workloads of Sluice's story, as fio runs inside pod cgroups: "inference"
(4k random reads, queue depth 1: its p50/p99 is what a cap must protect) and a
"checkpoint" burst (128k sequential writes, queue depth 32). Used by bench/qos.py and
demo/run.py alike."""

from __future__ import annotations

import json
import subprocess
import time

from tests.lab.pods import Pod


def fio_args(name: str, filename: str, *args: str) -> list[str]:
    return ["fio", "--output-format=json", f"--name={name}", f"--filename={filename}", "--ioengine=libaio",
            "--direct=1", *args]


def inference(pod: Pod, filename: str, seconds: int, *extra: str) -> dict:
    """Latency percentiles in microseconds: {"p50_us", "p99_us", "mean_us"}."""
    out = pod.run(*fio_args("inference", filename, "--rw=randread", "--bs=4k", "--iodepth=1", "--time_based",
                            f"--runtime={seconds}", "--percentile_list=50:99", *extra), timeout=600)
    clat = json.loads(out.stdout)["jobs"][0]["read"]["clat_ns"]
    pct = clat["percentile"]
    return {"p50_us": pct["50.000000"] / 1000, "p99_us": pct["99.000000"] / 1000, "mean_us": clat["mean"] / 1000}


def start_burst(pod: Pod, filename: str, seconds: int) -> subprocess.Popen:
    return pod.popen(*fio_args("checkpoint", filename, "--rw=write", "--bs=128k", "--iodepth=32", "--time_based",
                               f"--runtime={seconds}"))


def burst_bandwidth(proc: subprocess.Popen) -> float:
    """Bytes per second the finished burst wrote."""
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"checkpoint fio failed: {err}")
    return json.loads(out)["jobs"][0]["write"]["bw_bytes"]


def inference_during_burst(inf_pod: Pod, inf_file: str, ckpt_pod: Pod, ckpt_file: str, seconds: int,
                           *extra: str) -> tuple[dict, float]:
    """Inference latency while the checkpoint writes (it starts 2 s earlier and ends
    after), and the checkpoint's bandwidth."""
    burst = start_burst(ckpt_pod, ckpt_file, seconds + 4)
    time.sleep(2)
    latency = inference(inf_pod, inf_file, seconds, *extra)
    return latency, burst_bandwidth(burst)
