"""A test-only crash hook: the node plugin SIGKILLs itself at a named step.

Inert unless SLUICE_NODE_FAULT_FILE is set in the plugin's environment. Then, at each
step boundary, the file is read: when it names this step, it is removed (the fault
fires once) and the process kills itself, exactly as an OOM kill or a node crash would
stop it there. Lab tests use it to prove every call converges when retried.
"""

from __future__ import annotations

import os
import signal

ENV = "SLUICE_NODE_FAULT_FILE"


def step(name: str) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        with open(path) as fh:
            wanted = fh.read().strip()
    except OSError:
        return
    if wanted == name:
        os.unlink(path)
        os.kill(os.getpid(), signal.SIGKILL)
