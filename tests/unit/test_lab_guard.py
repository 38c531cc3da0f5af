"""The lab guard: a kernel test run on the host errors out (in setup, before any
fixture can touch the host), it never skips."""

import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lab_test_on_host_fails_loudly(pytester, monkeypatch):
    monkeypatch.delenv("LAB_GUEST", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import pytest_runtest_setup  # noqa: F401\n")
    pytester.makeini("[pytest]\nmarkers =\n    lab: real kernel\n")
    pytester.makepyfile(textwrap.dedent("""
        import pytest

        @pytest.mark.lab
        def test_needs_kernel():
            assert True
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*lab test outside the lab VM*"])


def test_env_flag_alone_is_not_enough(pytester, monkeypatch):
    # LAB_GUEST=1 on the host (copied from a guest shell, say) must not fool the guard:
    # the kernel command line of the lab VM is checked too.
    monkeypatch.setenv("LAB_GUEST", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest("from tests.conftest import pytest_runtest_setup  # noqa: F401\n")
    pytester.makeini("[pytest]\nmarkers =\n    lab: real kernel\n")
    pytester.makepyfile("import pytest\n\n@pytest.mark.lab\ndef test_k():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
