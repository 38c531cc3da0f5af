"""A target agent for a benchmark inside the lab VM: a thin pool on one disk, then
`python -m nvme_target` on a unix socket, ready when its health says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from nvme_target.agent.client import AgentClient
from tests.lab.kernel import sh, wait_for


def thin_pool(vg: str, pool: str, disk: str, size: str = "8G", pv_args: tuple[str, ...] = (),
              pool_args: tuple[str, ...] = ()) -> None:
    """The volume group `vg` on `disk` alone, with a thin pool of `size` (`pool_args`: more
    lvcreate arguments, e.g. --poolmetadatasize)."""
    sh("modprobe", "-a", "nvmet", "nvmet-tcp", "nvme-tcp", "dm-thin-pool")
    scope = ("--devices", disk)
    sh("pvcreate", *scope, "-q", "-ff", "-y", *pv_args, disk, timeout=600)
    sh("vgcreate", *scope, "-q", vg, disk, timeout=600)
    sh("lvcreate", *scope, "-q", "--type", "thin-pool", "-L", size, "-n", pool, *pool_args, vg, timeout=600)


def start(work: Path, vg: str, pool: str, disk: str, extra: tuple[str, ...] = (),
          timeout: float = 120, wait: float = 600) -> tuple[subprocess.Popen, AgentClient]:
    """The agent on `work`/agent.sock and a client whose calls wait `timeout` seconds."""
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "agent.sock"
    agent = subprocess.Popen([sys.executable, "-m", "nvme_target", "--vg", vg, "--pool", pool, "--pv", disk,
                              "--state-dir", str(work / "state"), "--socket", str(sock),
                              "--portal", "127.0.0.1:4420", "--log-level", "warning", *extra])
    client = AgentClient(f"unix:{sock}", timeout=timeout)
    wait_for(lambda: _ready(client), wait, "agent")
    return agent, client


def stop(agent: subprocess.Popen) -> None:
    agent.terminate()
    agent.wait()


def _ready(client: AgentClient) -> bool:
    try:
        return client.health().ready
    except Exception:
        return False
