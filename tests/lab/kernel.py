"""Small helpers for lab tests: run a tool, wait on sysfs, talk to configfs and fabrics.

These touch the real kernel of the lab VM directly; they are for tests that prove the
lab (and, later, for checking what Sluice did), not a second implementation of Sluice.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import TypeVar
from collections.abc import Callable

from csi_driver.node import devices

T = TypeVar("T")
NVMET = Path("/sys/kernel/config/nvmet")
SCRATCH_DISKS = ("/dev/vda", "/dev/vdb")  # blank sparse disks attached by lab/vm.py for every run
FABRICS = "/dev/nvme-fabrics"


def sh(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, LC_ALL="C")
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout, env=env)


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def new_host_nqn() -> str:
    return f"nqn.2014-08.org.nvmexpress:uuid:{uuid.uuid4()}"


def lvm(command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """An LVM command that scans only the lab scratch disks, never attached NVMe/TCP
    namespaces (a scan of a reconnecting one blocks; see nvme_target.lvm)."""
    return sh(command, "--devices", ",".join(SCRATCH_DISKS), *args, check=check)


def lvs_json(vg: str) -> list[dict]:
    out = lvm("lvs", "--reportformat", "json", "-o", "lv_name,segtype,lv_size,pool_lv,data_percent",
              "--units", "b", vg)
    return json.loads(out.stdout)["report"][0]["lv"]


def host_id(host_nqn: str) -> str:
    """A stable hostid for a host NQN. The 6.12 kernel (unlike 6.1) refuses (EINVAL) a connect whose hostid
    (by default the kernel's one per boot) is already in use with another hostnqn: each test host
    needs its own, as real hosts have."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, host_nqn))


def fabrics_connect(options: str) -> str:
    """Write a connect string to /dev/nvme-fabrics; return the controller name (nvmeN).
    A hostnqn given without a hostid gets host_id(hostnqn)."""
    fields = dict(f.split("=", 1) for f in options.split(",") if "=" in f)
    if "hostnqn" in fields and "hostid" not in fields:
        options += f",hostid={host_id(fields['hostnqn'])}"
    fd = os.open(FABRICS, os.O_RDWR)
    try:
        os.write(fd, options.encode())
        reply = os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)
    fields = dict(item.split("=", 1) for item in reply.split(","))
    return f"nvme{fields['instance']}"


def delete_controller(ctrl: str) -> None:
    path = Path("/sys/class/nvme") / ctrl / "delete_controller"
    if path.exists():
        path.write_text("1")


def controllers_for(subnqn: str) -> list[str]:
    found = []
    for ctrl in Path("/sys/class/nvme").glob("nvme*"):
        try:
            if (ctrl / "subsysnqn").read_text().strip() == subnqn:
                found.append(ctrl.name)
        except OSError:
            continue
    return found


def block_device_with_uuid(ns_uuid: str) -> str | None:
    """The visible namespace block device (the multipath head, nvmeXnY) with this UUID."""
    return devices.find_by_uuid(ns_uuid)


def fio_json(cgroup: Path | None, *args: str, timeout: float = 300) -> dict:
    """Run fio (optionally inside a cgroup v2 group) and return its parsed JSON report."""
    cmd = ["fio", "--output-format=json", *args]
    if cgroup is not None:
        cmd = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "fio-in-cgroup", *cmd]
    out = sh(*cmd, timeout=timeout)
    return json.loads(out.stdout)


def wait_live(ctrl: str, timeout: float) -> str:
    """Wait for a controller to be live again (after a reconnect); returns its state."""
    state = Path("/sys/class/nvme") / ctrl / "state"
    return wait_for(lambda: state.exists() and state.read_text().strip() == "live" and "live",
                    timeout, f"{ctrl} live")


def read_block(device: str, length: int, offset: int = 0) -> bytes:
    fd = os.open(device, os.O_RDONLY | os.O_DIRECT)
    try:
        import mmap
        buf = mmap.mmap(-1, length)
        os.preadv(fd, [buf], offset)
        return bytes(buf)
    finally:
        os.close(fd)


def write_block(device: str, data: bytes, offset: int = 0) -> None:
    fd = os.open(device, os.O_WRONLY | os.O_DIRECT)
    try:
        import mmap
        buf = mmap.mmap(-1, len(data))
        buf.write(data)
        os.pwritev(fd, [buf], offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def sluice_subsystems() -> list[str]:
    return sorted(p.name for p in (NVMET / "subsystems").iterdir() if p.name.startswith("nqn.2026-11.dev.sluice"))


def port_links() -> list[str]:
    return sorted(f"{port.name}/{link.name}" for port in (NVMET / "ports").iterdir()
                  for link in (port / "subsystems").iterdir())


def wipe_configfs() -> None:
    """What a reboot does to nvmet: every port, subsystem and host is gone."""
    for port in (NVMET / "ports").iterdir():
        for link in (port / "subsystems").iterdir():
            link.unlink()
        for ref in (port / "referrals").iterdir():
            ref.rmdir()
        port.rmdir()
    for sub in (NVMET / "subsystems").iterdir():
        for ns in (sub / "namespaces").iterdir():
            (ns / "enable").write_text("0")
            ns.rmdir()
        for host in (sub / "allowed_hosts").iterdir():
            host.unlink()
        sub.rmdir()
    for host in (NVMET / "hosts").iterdir():
        host.rmdir()


def connect(export, host_nqn: str, extra: str = "") -> tuple[str, str]:
    """Attach an Export (nvme_target.model.Export) as `host_nqn`: (controller, /dev path)."""
    portal = export.portals[0]
    options = (f"transport=tcp,traddr={portal.traddr},trsvcid={portal.trsvcid},"
               f"nqn={export.subsystem_nqn},hostnqn={host_nqn}")
    ctrl = fabrics_connect(options + ("," + extra if extra else ""))
    disk = wait_for(lambda: block_device_with_uuid(export.namespace_uuid), 30, "namespace by UUID")
    return ctrl, f"/dev/{disk}"


def disconnect(export) -> None:
    sh("udevadm", "settle")
    for ctrl in controllers_for(export.subsystem_nqn):
        delete_controller(ctrl)
    wait_for(lambda: not controllers_for(export.subsystem_nqn), 30, "controller removal")
