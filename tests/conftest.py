"""Test layers: `tests/unit` runs on the host; `tests/lab` needs the real kernel.

Tests marked ``lab`` run only inside the lab VM (``make lab-test`` boots it). A lab test
that finds itself anywhere else fails loudly instead of skipping, so a run can never go
green by leaving the kernel tests out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import shards

pytest_plugins = ["pytester"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lab-shard", metavar="K/N", default=None,
                     help="run only the K-th of N parts of the collected tests, whole modules each "
                          "(tests/shards.py; make lab-test runs two lab VMs side by side)")


@pytest.hookimpl(trylast=True)  # after -m has deselected: shards balance what will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    spec = config.getoption("--lab-shard")
    if not spec:
        return
    try:
        k, n = shards.parse(spec)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    shard_of = shards.assign([item.module.__name__.rpartition(".")[2] for item in items], n)
    keep, dropped = [], []
    for item in items:
        (keep if shard_of[item.module.__name__.rpartition(".")[2]] == k else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def in_lab_guest() -> bool:
    """True only inside the VM booted by lab/vm.py (its stage 2 sets LAB_GUEST=1)."""
    if os.environ.get("LAB_GUEST") != "1":
        return False
    try:
        return "lab.stage2=" in Path("/proc/cmdline").read_text()
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lab") and not in_lab_guest():
        pytest.fail(
            "lab test outside the lab VM: it needs the real kernel. "
            "Run it with `make lab-test` (or `make test`), never on the host.",
            pytrace=False,
        )
