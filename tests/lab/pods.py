"""Pod cgroups as kubelet makes them (both cgroup drivers, every QoS class), with one
"container" leaf in each where the test's processes (fio, dd) run."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from csi_driver.node import devices

CGROUP = Path("/sys/fs/cgroup")


@dataclass
class Pod:
    uid: str
    cgroup: Path        # the pod's cgroup (where Sluice writes io.max)
    container: Path     # a container's cgroup inside it (where processes run)
    top: Path           # kubepods / kubepods.slice

    def run(self, *cmd: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the container's cgroup."""
        wrapped = ["sh", "-c", f'echo $$ > "{self.container}/cgroup.procs" && exec "$@"', "in-pod", *cmd]
        return subprocess.run(wrapped, capture_output=True, text=True, timeout=timeout, check=check)

    def popen(self, *cmd: str) -> subprocess.Popen:
        wrapped = ["sh", "-c", f'echo $$ > "{self.container}/cgroup.procs" && exec "$@"', "in-pod", *cmd]
        return subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def io_max(self, device: str) -> str:
        """The pod's io.max line for a block device ("" when it has none)."""
        majmin = devices.majmin(device)
        io_max = self.cgroup / "io.max"
        if not io_max.exists():  # the io controller is not enabled for the pod (yet)
            return ""
        return next((ln for ln in io_max.read_text().splitlines() if ln.split()[0] == majmin), "")

    def remove(self) -> None:
        """rmdir the container, the pod and every parent left empty (as kubelet would)."""
        path, root = self.container, self.top.parent
        while path != root:
            try:
                path.rmdir()
            except OSError:
                return  # still used by another pod of the test
            path = path.parent


def make_pod(driver: str = "systemd", qos_class: str = "burstable", root: Path = CGROUP) -> Pod:
    """A pod cgroup like kubelet's; qos_class "" is Guaranteed."""
    uid = str(uuid.uuid4())
    if driver == "systemd":
        top = root / "kubepods.slice"
        under = top / f"kubepods-{qos_class}.slice" if qos_class else top
        prefix = f"kubepods-{qos_class}-" if qos_class else "kubepods-"
        cgroup = under / f"{prefix}pod{uid.replace('-', '_')}.slice"
        container = cgroup / f"cri-containerd-{uuid.uuid4().hex}.scope"
    else:
        top = root / "kubepods"
        under = top / qos_class if qos_class else top
        cgroup = under / f"pod{uid}"
        container = cgroup / uuid.uuid4().hex
    os.makedirs(container, exist_ok=True)
    return Pod(uid, cgroup, container, top)
