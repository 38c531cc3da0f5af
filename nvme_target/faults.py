"""Test-only fault points: `point("clone.after-snapshot")` SIGKILLs this process when
the file named by SLUICE_FAULT_FILE holds that point's name; a no-op otherwise (one
dictionary lookup when the variable is unset, which is how production runs).

Lab tests use it to kill the agent at every step boundary of every operation and then
check that the retried call converges (tests/lab/test_crash_convergence.py)."""

from __future__ import annotations

import os
import signal

ENV = "SLUICE_FAULT_FILE"


def point(name: str) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        with open(path) as fh:
            armed = fh.read().strip()
    except OSError:
        return
    if armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
