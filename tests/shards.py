"""Split the lab suite over VMs that run side by side (`make lab-test`).

A lab VM keeps about 1.1 of this machine's 2 cores busy on average: much of a lab test is
waiting (a reconnect timer, a process starting, a deadline), so two VMs at once finish the
suite far sooner than one. Tests whose assertions are rates or latencies are marked
``timing`` and run afterwards in a VM of their own, never beside another.

Whole modules go to one shard (their module fixtures are set up once), greedily by the
seconds each took in a full run; a module missing from the table counts as DEFAULT_SECONDS,
so a new test file always lands somewhere.
"""

from __future__ import annotations

# seconds per module in a full 6.12 run on an otherwise idle machine (make lab-test, --durations)
SECONDS = {
    "test_kernel_backend": 381,
    "test_crash_convergence": 330,
    "test_multi_target": 241,
    "test_node_e2e": 205,
    "test_node_outage": 193,
    "test_csi_controller": 190,
    "test_target_agent": 184,
    "test_node_guards": 167,
    "test_node_crash": 144,
    "test_group_snapshots": 110,
    "test_node_failures": 81,
    "test_fencing": 60,
    "test_pool_fill": 60,
    "test_dhchap": 56,
    "test_environment": 1,
    "test_spdk_target": 1,  # skipped without an SPDK build (CI has none)
    "test_spdk_dhchap": 1,
    # the timing modules (their own VM): demo 164, protection 177, qos 207, metrics 105, smoke 22
}
DEFAULT_SECONDS = 120


def parse(spec: str) -> tuple[int, int]:
    """'K/N' -> (K, N), 1 <= K <= N."""
    try:
        k, n = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ValueError(f"--lab-shard wants K/N (e.g. 1/2), not {spec!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"--lab-shard {spec}: K must be between 1 and N")
    return k, n


def assign(modules: list[str], n: int) -> dict[str, int]:
    """module name -> shard (1..n): heaviest first, each to the lightest shard so far."""
    totals = [0.0] * n
    shard_of: dict[str, int] = {}
    for module in sorted(set(modules), key=lambda m: (-SECONDS.get(m, DEFAULT_SECONDS), m)):
        lightest = min(range(n), key=lambda i: (totals[i], i))
        shard_of[module] = lightest + 1
        totals[lightest] += SECONDS.get(module, DEFAULT_SECONDS)
    return shard_of
