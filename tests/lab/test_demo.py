"""`make demo`, short: the whole story runs to DEMO OK on the real kernel, prints its
table and draws the timeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.timing]
ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_to_the_end(thin_pool, tmp_path):
    vg, pool = thin_pool
    result = subprocess.run([sys.executable, str(ROOT / "demo" / "run.py"), "--vg", vg, "--pool", pool,
                             "--seconds", "2", "--out", str(tmp_path)], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for marker in ("1. provision", "p99 vs alone", "sha256 of the first 64 MiB", "io.max rewritten",
                   "the pod's filesystem now", "left behind", "DEMO OK"):
        assert marker in result.stdout, marker
    assert (tmp_path / "demo-latency.png").stat().st_size > 10_000
