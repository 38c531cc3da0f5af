"""The lab suite's split over side-by-side VMs (tests/shards.py, --lab-shard)."""

from __future__ import annotations

import re
from pathlib import Path

from tests import shards

LAB = Path(__file__).resolve().parents[1] / "lab"
TIMING = re.compile(r"^pytestmark = .*pytest\.mark\.timing", re.M)


def lab_modules() -> dict[str, bool]:
    """module name -> whether it is a timing module"""
    return {p.stem: bool(TIMING.search(p.read_text())) for p in sorted(LAB.glob("test_*.py"))}


def test_every_lab_module_has_a_weight_or_runs_alone_as_timing():
    modules = lab_modules()
    missing = [m for m, timing in modules.items() if not timing and m not in shards.SECONDS]
    assert not missing, f"give these their seconds in tests/shards.py SECONDS: {missing}"
    stale = [m for m in shards.SECONDS if m not in modules or modules[m]]
    assert not stale, f"no longer lab modules that share a VM: {stale}"


def test_shards_partition_the_modules_and_balance_within_one_module():
    modules = [m for m, timing in lab_modules().items() if not timing]
    shard_of = shards.assign(modules, 2)
    assert set(shard_of) == set(modules) and set(shard_of.values()) == {1, 2}
    totals = [sum(shards.SECONDS[m] for m in modules if shard_of[m] == k) for k in (1, 2)]
    assert abs(totals[0] - totals[1]) <= max(shards.SECONDS.values()), totals


def test_an_unknown_module_still_lands_in_a_shard():
    assert shards.assign(["test_brand_new"], 3) == {"test_brand_new": 1}


def test_lab_shard_option_selects_disjoint_parts_that_cover_everything(pytester):
    pytester.makeconftest("from tests.conftest import pytest_addoption, pytest_collection_modifyitems\n")
    for name in ("test_kernel_backend", "test_crash_convergence", "test_brand_new"):
        pytester.makepyfile(**{name: "def test_a():\n    pass\n\ndef test_b():\n    pass\n"})
    seen = []
    for k in (1, 2):
        result = pytester.runpytest("-p", "no:cacheprovider", "--lab-shard", f"{k}/2", "-v")
        passed = [line.split(" ")[0] for line in result.outlines if line.endswith("PASSED")
                  or " PASSED " in line]
        assert passed, result.outlines
        seen.append(set(passed))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 6


def test_a_bad_shard_is_a_usage_error(pytester):
    pytester.makeconftest("from tests.conftest import pytest_addoption, pytest_collection_modifyitems\n")
    pytester.makepyfile(test_x="def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--lab-shard", "3/2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--lab-shard 3/2: K must be between 1 and N*"])
