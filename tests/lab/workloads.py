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


# ------------------------------------------------- per-I/O latency logs (latency protection)
def logged_inference(pod: Pod, filename: str, seconds: int, log_prefix: str, *extra: str) -> subprocess.Popen:
    """Inference that logs every completion (unix-epoch ms, latency ns) to <log_prefix>_clat.1.log."""
    return pod.popen(*fio_args("inference", filename, "--rw=randread", "--bs=4k", "--iodepth=1", "--time_based",
                               f"--runtime={seconds}", "--percentile_list=50:99", f"--write_lat_log={log_prefix}",
                               "--log_avg_msec=0", "--log_unix_epoch=1", *extra))


def logged_burst(pod: Pod, filename: str, seconds: int, log_prefix: str) -> subprocess.Popen:
    """The checkpoint burst, logging its completions (for when it really started)."""
    return pod.popen(*fio_args("checkpoint", filename, "--rw=write", "--bs=128k", "--iodepth=32", "--time_based",
                               f"--runtime={seconds}", f"--write_lat_log={log_prefix}", "--log_avg_msec=0",
                               "--log_unix_epoch=1"))


def finished(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"fio failed: {err}")
    return json.loads(out)["jobs"][0]


def clat_log(log_prefix: str) -> list[tuple[float, float]]:
    """(completion time, unix ms; latency, µs) of every I/O fio logged."""
    rows = []
    with open(f"{log_prefix}_clat.1.log") as f:
        for line in f:
            fields = line.split(",")
            if len(fields) >= 2:
                rows.append((float(fields[0]), int(fields[1]) / 1000))
    return rows


def first_issue_ms(log: list[tuple[float, float]]) -> float:
    """When the first logged I/O was issued (its completion minus its latency)."""
    return min(t - lat / 1000 for t, lat in log[:64])


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def window_p99(log: list[tuple[float, float]], start_ms: float, end_ms: float) -> float:
    return p99([lat for t, lat in log if start_ms <= t < end_ms])


def recovery_seconds(log: list[tuple[float, float]], start_ms: float, end_ms: float, objective_us: float,
                     window_ms: float = 1000, step_ms: float = 100) -> float | None:
    """Seconds from `start_ms` until a 1 s window's p99 is under the objective and every later
    window stays under it; None when that never happens before `end_ms`."""
    starts = [start_ms + i * step_ms for i in range(int((end_ms - start_ms - window_ms) / step_ms) + 1)]
    over = [s for s in starts if window_p99(log, s, s + window_ms) > objective_us]
    if not over:
        return 0.0
    back = over[-1] + step_ms
    return (back - start_ms) / 1000 if back + window_ms <= end_ms else None
