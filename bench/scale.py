"""One target with many volumes, through the agent over gRPC as the controller uses it.

Runs inside the lab VM (`make bench`; BENCH_SCALE_VOLUMES, default 1000). Measures:
  - CreateVolume time around the 1,000th volume vs around the 10th (goal <= 1.5);
  - a ListVolumes full walk with limit 100: time per entry at 100 volumes vs at all of
    them (flat is the goal: each page is answered from the agent's index);
  - the agent's RSS with no volumes and with all of them;
  - beside each timed create, the same `lvcreate` by hand, with and without LVM's
    metadata archive/backup files (`-A n`): what LVM alone costs at 10 and 1,000 LVs.
Prints the ratios; raw numbers go to $LAB_OUT/bench-scale.json.

Under TCG every LVM command costs seconds, so 1,000 creates through the agent one by
one take hours. The volumes the benchmark does not time are therefore made behind the
agent's back, as the agent itself would make them (a thin LV per volume, with the
agent's tags, but left inactive: no device-mapper device), by `lvcreate` directly,
and handed to the agent with its Resync call: the agent then holds and answers for all
of them exactly as for its own. The timed creates (the 1st..20th and the last 10) go
through the agent. The volume group lives on a RAM-backed loop device (a sparse file
in /dev/shm; BENCH_SCALE_DISK=/dev/vdX for a scratch disk), with a metadata area large
enough for 1,000 LVs, so the host's shared disk does not drown the ratios in noise.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import lab_agent  # noqa: E402
from nvme_target import lvtags, naming  # noqa: E402
from nvme_target.agent.client import AgentClient  # noqa: E402
from tests.lab.kernel import sh  # noqa: E402

VG, POOL = "scalevg", "pool"
VOLUMES = int(os.environ.get("BENCH_SCALE_VOLUMES", "1000"))
SIZE = 4 << 20
EARLY = 20   # timed creates at the start; the median of the 5th..15th is "around the 10th"
LATE = 10    # timed creates at the end
PARALLEL = 4  # lvcreate processes at a time for the untimed volumes


def disk() -> str:
    """The scratch device: BENCH_SCALE_DISK, or a loop device on a sparse file in RAM."""
    given = os.environ.get("BENCH_SCALE_DISK")
    if given:
        return given
    image = Path("/dev/shm/bench-scale.img")
    sh("truncate", "-s", "6G", str(image))
    sh("modprobe", "loop", check=False)
    return sh("losetup", "--find", "--show", str(image)).stdout.strip()


def name(i: int) -> str:
    return f"scale-{i:05d}"


def behind_the_agents_back(dev: str, first: int, last: int) -> float:
    """Volumes first..last-1 as the agent makes them, but inactive, by `lvcreate` run
    a few at a time (LVM serializes the metadata writes; process start-ups overlap);
    returns the seconds taken. (One `lvm` shell for many commands would save the
    start-ups, but it crashed with SIGSEGV after two commands in the lab VM.)"""
    t0 = time.perf_counter()

    def make(i: int) -> None:
        tags = [arg for tag in lvtags.volume_tags(name(i), {}, None) for arg in ("--addtag", tag)]
        made = sh("lvcreate", "--devices", dev, "-q", "-A", "n", "-an", "-kn", "-V", f"{SIZE}b", "-T",
                  f"{VG}/{POOL}", "-n", naming.volume_id(name(i)), *tags, timeout=600, check=False)
        if made.returncode != 0:
            raise RuntimeError(f"lvcreate of volume {i + 1} failed ({made.returncode}): {made.stderr.strip()}")

    with ThreadPoolExecutor(PARALLEL) as pool:
        for done, _ in enumerate(pool.map(make, range(first, last)), start=first + 1):
            if done % 50 == 0:
                print(f"  {done} volumes, {time.perf_counter() - t0:.0f} s into this bulk", flush=True)
    return time.perf_counter() - t0


def timed_creates(client: AgentClient, dev: str, first: int, last: int) -> tuple[list[float], dict[str, list[float]]]:
    """The agent's CreateVolume of volumes first..last-1, each followed by the same
    `lvcreate` by hand (what LVM alone costs at this many LVs) and by hand without
    LVM's metadata archive and backup files (`-A n`); the hand-made LVs are removed
    (untimed) so the volume count stays the agent's."""
    times, by_hand = [], {"lvcreate": [], "lvcreate -A n": []}
    for i in range(first, last):
        t0 = time.perf_counter()
        client.create_volume(name(i), SIZE)
        times.append(time.perf_counter() - t0)
        # the agent's tags for such a volume, renamed so the agent does not take the LV for one of its own
        tags = [arg for tag in lvtags.volume_tags(name(i), {}, None)
                for arg in ("--addtag", tag.replace("sluice.", "benchh."))]
        for kind, extra in (("lvcreate", ()), ("lvcreate -A n", ("-A", "n"))):
            lv = f"hand-{i}-{len(extra)}"
            t0 = time.perf_counter()
            sh("lvcreate", "--devices", dev, "-q", *extra, "-V", f"{SIZE}b", "-T", f"{VG}/{POOL}", "-n", lv,
               "-kn", *tags, timeout=600)
            by_hand[kind].append(time.perf_counter() - t0)
            sh("lvremove", "--devices", dev, "-q", "-f", f"{VG}/{lv}", timeout=600)
        print(f"  create {i + 1}: {times[-1]:.2f} s (by hand: lvcreate {by_hand['lvcreate'][-1]:.2f} s, "
              f"with -A n {by_hand['lvcreate -A n'][-1]:.2f} s)", flush=True)
    return times, by_hand


def walk(client: AgentClient) -> tuple[int, float]:
    """A full ListVolumes walk, 100 per page: (entries, seconds)."""
    t0, seen, after = time.perf_counter(), 0, ""
    while True:
        page = client.list_volumes(start_after=after, limit=100)
        seen += len(page)
        if len(page) < 100:
            return seen, time.perf_counter() - t0
        after = page[-1].id


def walks(client: AgentClient, expected: int) -> tuple[int, float]:
    """The median of three walks; each must see every volume."""
    runs = [walk(client) for _ in range(3)]
    assert all(count == expected for count, _ in runs), f"walks saw {runs}, expected {expected}"
    return expected, statistics.median(s for _, s in runs)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    dev = disk()
    # a 4G pool's default thin metadata (4 MiB) ran out at ~640 thin volumes: 128 MiB holds 1,000 with room
    lab_agent.thin_pool(VG, POOL, dev, size="4G", pv_args=("--metadatasize", "64m"),
                        pool_args=("--poolmetadatasize", "128m"))
    agent, client = lab_agent.start(Path("/tmp/bench-scale"), VG, POOL, dev, ("--overcommit-ratio", "4"))
    rss_empty = rss_kib(agent.pid)
    early, early_hand = timed_creates(client, dev, 0, EARLY)
    bulk_s = behind_the_agents_back(dev, EARLY, 100)
    client.resync()
    walked = {100: walks(client, 100)}
    bulk_s += behind_the_agents_back(dev, 100, VOLUMES - LATE)
    client.resync()
    late, late_hand = timed_creates(client, dev, VOLUMES - LATE, VOLUMES)
    walked[VOLUMES] = walks(client, VOLUMES)
    rss_full = rss_kib(agent.pid)
    lab_agent.stop(agent)
    summary(early, late, walked, (rss_empty, rss_full), bulk_s, (early_hand, late_hand))
    sh("vgremove", "--devices", dev, "-q", "-f", VG, check=False, timeout=600)
    return 0


def summary(early: list[float], late: list[float], walked: dict[int, tuple[int, float]],
            rss: tuple[int, int], bulk_s: float, hand: tuple[dict, dict]) -> None:
    at_10, at_end = statistics.median(early[5:15]), statistics.median(late)
    per_entry = {n: s / count for n, (count, s) in walked.items()}
    walk_ratio = per_entry[VOLUMES] / per_entry[100]
    print(f"one target, {VOLUMES} volumes through the agent (lab VM, TCG; {VOLUMES - EARLY - LATE} made by LVM "
          f"behind the agent's back in {bulk_s:.0f} s, then Resync):")
    print(f"  CreateVolume median around the 10th: {at_10 * 1000:7.0f} ms, around the {VOLUMES}th: "
          f"{at_end * 1000:7.0f} ms; ratio {at_end / at_10:.2f} (goal <= 1.50)")
    hand_ratios = {}
    for kind in hand[0]:
        h10, hend = statistics.median(hand[0][kind][5:15]), statistics.median(hand[1][kind])
        hand_ratios[kind] = hend / h10
        print(f"  {kind + ' by hand':28s} around the 10th: {h10 * 1000:7.0f} ms, around the {VOLUMES}th: "
              f"{hend * 1000:7.0f} ms; ratio {hend / h10:.2f}")
    base10, base_end = statistics.median(hand[0]["lvcreate"][5:15]), statistics.median(hand[1]["lvcreate"])
    print(f"  the agent's own part (CreateVolume - lvcreate by hand): {(at_10 - base10) * 1000:.0f} ms around the "
          f"10th, {(at_end - base_end) * 1000:.0f} ms around the {VOLUMES}th")
    for n, (count, seconds) in sorted(walked.items()):
        print(f"  ListVolumes walk (limit 100) at {n} volumes: {count} entries in {seconds * 1000:.0f} ms, "
              f"{per_entry[n] * 1e6:.0f} us per entry")
    print(f"  walk time per entry, {VOLUMES} vs 100 volumes: ratio {walk_ratio:.2f} (goal: flat, ~1)")
    print(f"  agent RSS: {rss[0] / 1024:.0f} MiB empty, {rss[1] / 1024:.0f} MiB with {VOLUMES} volumes")
    out = os.environ.get("LAB_OUT")
    if out:
        Path(out, "bench-scale.json").write_text(json.dumps({
            "volumes": VOLUMES, "early_create_s": [round(x, 4) for x in early],
            "late_create_s": [round(x, 4) for x in late], "create_ratio": at_end / at_10,
            "by_hand_s": {kind: {"early": [round(x, 4) for x in hand[0][kind]],
                                 "late": [round(x, 4) for x in hand[1][kind]]} for kind in hand[0]},
            "by_hand_ratio": hand_ratios,
            "walks": {str(n): {"entries": c, "seconds": s} for n, (c, s) in walked.items()},
            "walk_per_entry_ratio": walk_ratio, "rss_kib": {"empty": rss[0], "full": rss[1]},
            "bulk_seconds": bulk_s}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
