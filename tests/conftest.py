"""Test layers: `tests/unit` runs on the host; `tests/lab` needs the real kernel.

Tests marked ``lab`` run only inside the lab VM (``make lab-test`` boots it). A lab test
that finds itself anywhere else fails loudly instead of skipping, so a run can never go
green by leaving the kernel tests out.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


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
