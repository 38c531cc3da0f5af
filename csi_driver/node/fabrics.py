"""The kernel NVMe/TCP initiator through /dev/nvme-fabrics and /sys/class/nvme.

connect() writes the option string to /dev/nvme-fabrics (no nvme-cli: its output has
changed under other drivers' feet). A refused connect raises with the kernel's own
words, read from /dev/kmsg. An already-connected subsystem is reused.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from csi_driver.node import inputs
from nvme_target import dhchap
from sluice_common.errors import FailedPrecondition, InvalidArgument

log = structlog.get_logger(__name__)
FABRICS = "/dev/nvme-fabrics"
SYS_NVME = Path("/sys/class/nvme")


@dataclass(frozen=True)
class Portal:
    traddr: str
    trsvcid: str


@dataclass(frozen=True)
class ConnectSpec:
    subnqn: str
    portals: tuple[Portal, ...]
    host_nqn: str
    host_id: str
    ctrl_loss_tmo: int = 60
    reconnect_delay: int = 2
    keep_alive_tmo: int = 5
    nr_io_queues: int = 4
    host_iface: str = ""
    host_traddr: str = ""
    # DH-HMAC-CHAP (fetched from the target agent at stage; only ever in the option string)
    dhchap_secret: str = field(default="", repr=False)
    dhchap_ctrl_secret: str = field(default="", repr=False)

    def options(self, portal: Portal) -> str:
        """The option string; every field is checked (see inputs) before it is joined."""
        self.check()
        opts = [
            "transport=tcp", f"traddr={portal.traddr}", f"trsvcid={portal.trsvcid}", f"nqn={self.subnqn}",
            f"hostnqn={self.host_nqn}", f"hostid={self.host_id}", f"ctrl_loss_tmo={self.ctrl_loss_tmo}",
            f"reconnect_delay={self.reconnect_delay}", f"keep_alive_tmo={self.keep_alive_tmo}",
            f"nr_io_queues={self.nr_io_queues}",
        ]
        if self.host_iface:
            opts.append(f"host_iface={self.host_iface}")
        if self.host_traddr:
            opts.append(f"host_traddr={self.host_traddr}")
        if self.dhchap_secret:
            opts.append(f"dhchap_secret={self.dhchap_secret}")
        if self.dhchap_ctrl_secret:
            opts.append(f"dhchap_ctrl_secret={self.dhchap_ctrl_secret}")
        return ",".join(opts)

    def check(self) -> None:
        inputs.nqn(self.subnqn, "publish_context nvme.subnqn")
        inputs.nqn(self.host_nqn, "host NQN")
        inputs.ns_uuid(self.host_id.lower(), "host id")
        for portal in self.portals:
            inputs.address(portal.traddr, "publish_context nvme.portals")
            inputs.port(portal.trsvcid, "publish_context nvme.portals")
        inputs.iface(self.host_iface, "host_iface")
        if self.host_traddr:
            inputs.address(self.host_traddr, "host_traddr")
        for name in ("dhchap_secret", "dhchap_ctrl_secret"):  # named, never shown
            if getattr(self, name) and not dhchap.well_formed(getattr(self, name)):
                raise InvalidArgument(f"{name} from the target is not a DHHC-1 secret")
        if self.dhchap_ctrl_secret and not self.dhchap_secret:
            raise InvalidArgument("dhchap_ctrl_secret needs a dhchap_secret")
        for name in ("ctrl_loss_tmo", "reconnect_delay", "keep_alive_tmo", "nr_io_queues"):
            if not isinstance(getattr(self, name), int):
                raise InvalidArgument(f"{name} must be an integer")


def parse_portals(value: str) -> tuple[Portal, ...]:
    """`10.0.0.5:4420,[fd00::5]:4420` (the publish context's nvme.portals): IP addresses
    and ports only, so nothing else reaches the fabrics option string."""
    field = "publish_context nvme.portals"
    portals = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise InvalidArgument(f"{field}: bad portal {item!r} (address:port)")
        bracketed = host.startswith("[") and host.endswith("]")
        portals.append(Portal(inputs.address(host[1:-1] if bracketed else host, field), inputs.port(port, field)))
    if not portals:
        raise InvalidArgument(f"{field} is empty")
    return tuple(portals)


def controllers(subnqn: str, host_nqn: str | None = None) -> list[str]:
    """Controllers (nvmeN) of this subsystem, optionally only those of this host NQN."""
    found = []
    for ctrl in sorted(SYS_NVME.glob("nvme*")):
        if _attr(ctrl, "subsysnqn") != subnqn:
            continue
        if host_nqn is not None and _attr(ctrl, "hostnqn") not in ("", host_nqn):
            continue
        found.append(ctrl.name)
    return found


def state(ctrl: str) -> str:
    return _attr(SYS_NVME / ctrl, "state")


def portal_of(ctrl: str) -> Portal | None:
    fields = dict(kv.split("=", 1) for kv in _attr(SYS_NVME / ctrl, "address").split(",") if "=" in kv)
    if "traddr" not in fields:
        return None
    return Portal(fields["traddr"], fields.get("trsvcid", ""))


def connect(spec: ConnectSpec) -> list[str]:
    """Connect to every portal not already connected; return all controllers of the
    subsystem for this host. Raises FailedPrecondition with the kernel's reason."""
    have = {portal_of(c) for c in controllers(spec.subnqn, spec.host_nqn)}
    for portal in spec.portals:
        if portal in have:
            continue
        ctrl = _write_connect(spec, portal)
        log.info("nvme connected", controller=ctrl, subnqn=spec.subnqn, traddr=portal.traddr)
    return controllers(spec.subnqn, spec.host_nqn)


def rescan(ctrl: str) -> None:
    """Re-read the namespaces of a controller (after the target grew one)."""
    (SYS_NVME / ctrl / "rescan_controller").write_text("1")


def disconnect(subnqn: str, host_nqn: str | None = None) -> list[str]:
    gone = []
    for ctrl in controllers(subnqn, host_nqn):
        try:
            (SYS_NVME / ctrl / "delete_controller").write_text("1")
            gone.append(ctrl)
        except FileNotFoundError:
            continue
    if gone:
        log.info("nvme disconnected", controllers=gone, subnqn=subnqn)
    return gone


def _write_connect(spec: ConnectSpec, portal: Portal) -> str:
    kmsg = _KernelLog()
    try:
        fd = os.open(FABRICS, os.O_RDWR)
    except OSError as exc:
        raise FailedPrecondition(f"cannot open {FABRICS} ({os.strerror(exc.errno)}): is nvme-tcp loaded?") from None
    try:
        os.write(fd, spec.options(portal).encode())
        reply = os.read(fd, 4096).decode().strip()
    except OSError as exc:
        reason = kmsg.lines_about(spec.subnqn) or [os.strerror(exc.errno)]
        raise FailedPrecondition(
            f"connect to {spec.subnqn} at {portal.traddr}:{portal.trsvcid} refused: {' / '.join(reason)}",
            errno=exc.errno) from None
    finally:
        os.close(fd)
        kmsg.close()
    fields = dict(kv.split("=", 1) for kv in reply.split(",") if "=" in kv)
    return f"nvme{fields['instance']}"


class _KernelLog:
    """New /dev/kmsg lines since construction (to explain a refused connect)."""

    def __init__(self) -> None:
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.fd = -1

    def lines_about(self, needle: str) -> list[str]:
        lines = []
        while self.fd >= 0:
            try:
                record = os.read(self.fd, 8192).decode(errors="replace")
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue
                break
            message = record.split(";", 1)[-1].strip()
            if needle in message or "nvme" in message:
                lines.append(message)
        return lines[-3:]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _attr(path: Path, name: str) -> str:
    try:
        return (path / name).read_text().strip()
    except OSError:
        return ""
