"""The lab harness itself: exit codes, timeouts and the closing summary.

These boot the real lab VM from the host (a few seconds each): the harness is what
turns a kernel test into a pass or a fail, so it is tested the same way it is used.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VM = [sys.executable, str(ROOT / "lab/vm.py"), "--quiet"]
SUMMARY = [sys.executable, str(ROOT / "lab/summary.py")]


def run_vm(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*VM, "--out", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_guest_exit_status_comes_back(tmp_path):
    result = run_vm(tmp_path, "--", "bash", "-c", "echo guest-ran > $LAB_OUT/marker; exit 3")
    assert result.returncode == 3
    assert (tmp_path / "run/marker").read_text().strip() == "guest-ran"
    assert "LAB-EXIT rc=3" in (tmp_path / "run/serial.log").read_text()


def test_hung_guest_is_killed_and_fails(tmp_path):
    result = run_vm(tmp_path, "--timeout", "20", "--", "sleep", "600")
    assert result.returncode == 124
    assert "TIMEOUT" in result.stderr
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True)
    assert leftover.returncode == 1, "no qemu process may survive the timeout"


def test_a_guest_that_dies_while_booting_is_booted_again_then_given_up(tmp_path):
    # A real kernel panic before the command starts (no init to run): the harness boots
    # again (TCG rarely panics a boot while the kernel patches its own code), keeps each
    # failed console, and gives up after --boot-retries more boots.
    result = run_vm(tmp_path, "--boot-retries", "1", "--append", "rdinit=/no-such-init",
                    "--", "bash", "-c", "touch $LAB_OUT/ran")
    assert result.returncode == 125
    assert result.stderr.count("died before the command started") == 2
    assert "giving up after 2 failed boots" in result.stderr
    for n in (1, 2):
        assert "Kernel panic" in (tmp_path / f"run/serial-boot-failure-{n}.log").read_text()
    assert not (tmp_path / "run/ran").exists()


def test_a_command_that_fails_is_never_run_again(tmp_path):
    result = run_vm(tmp_path, "--", "bash", "-c", "echo x >> $LAB_OUT/runs; exit 5")
    assert result.returncode == 5
    assert (tmp_path / "run/runs").read_text() == "x\n"
    assert "died before" not in result.stderr


def junit(path: Path, tests: int, failures: int = 0, errors: int = 0, skipped: int = 0) -> Path:
    path.write_text(
        f'<testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" '
        f'errors="{errors}" skipped="{skipped}"></testsuite></testsuites>'
    )
    return path


def test_summary_adds_up_reports(tmp_path):
    a = junit(tmp_path / "a.xml", tests=10, skipped=1)
    b = junit(tmp_path / "b.xml", tests=5)
    result = subprocess.run([*SUMMARY, str(a), str(b)], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "total: 14 passed, 0 failed, 1 skipped"


def test_summary_counts_errors_and_missing_reports_as_failures(tmp_path):
    a = junit(tmp_path / "a.xml", tests=4, failures=1, errors=1)
    result = subprocess.run([*SUMMARY, str(a), str(tmp_path / "missing.xml")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "total: 2 passed, 3 failed, 0 skipped"
