"""Target agent settings: flags (with SLUICE_TARGET_* environment defaults) read once
into a frozen, validated object. Nothing else in the agent reads flags or environment."""

from __future__ import annotations

import argparse
import os
from socket import gethostname
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence

from nvme_target import portals
from nvme_target.fill import FillMarks
from sluice_common import topology as segments
from sluice_common.errors import InvalidArgument


BACKENDS = ("kernel", "spdk")


@dataclass(frozen=True)
class AgentSettings:
    backend: str = "kernel"
    vg: str = "sluice"
    pool: str = "pool"
    pvs: tuple[str, ...] = ()
    state_dir: Path = Path("/var/lib/sluice/target")
    portals: tuple[str, ...] = ("127.0.0.1:4420",)
    socket: Path | None = Path("/run/sluice/target.sock")
    listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure_listen: bool = False
    overcommit_ratio: float = 4.0
    fill_high: float = 85.0         # percent (data or metadata): refuse new volumes/clones/snapshots
    fill_critical: float = 95.0     # percent: the pool's volumes report an abnormal condition
    fill_interval: float = 10.0     # seconds between background fill measurements
    pool_auto_extend: float = 0.0   # percent to grow the pool by past the high mark (0: never)
    error_when_full: bool = True    # kernel: lvchange --errorwhenfull y on the pool at start
    target_id: str = field(default_factory=gethostname)
    topology: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "info"
    spdk_socket: Path = Path("/var/tmp/spdk.sock")
    spdk_base_bdev: str = ""
    spdk_lvstore: str = "sluice"
    spdk_aio_file: str = ""
    metrics_port: int = 0          # 0: no /metrics endpoint
    metrics_bind: str = "0.0.0.0"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def validate(self, serving: bool = True) -> AgentSettings:
        """Check the settings; `serving=False` for an in-process target (no gRPC)."""
        if self.backend not in BACKENDS:
            raise InvalidArgument(f"--backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.backend == "spdk" and not self.spdk_base_bdev:
            raise InvalidArgument("--backend spdk needs --spdk-base-bdev (the bdev the lvstore lives on)")
        if not self.portals:
            raise InvalidArgument("--portal: at least one NVMe/TCP portal is required")
        for spec in self.portals:
            portals.split(spec)
        if serving and self.socket is None and self.listen is None:
            raise InvalidArgument("give --socket, --listen or both")
        tls_files = (self.tls_cert, self.tls_key, self.tls_client_ca)
        if any(tls_files) and not all(tls_files):
            raise InvalidArgument("--tls-cert, --tls-key and --tls-client-ca go together")
        if self.listen is not None:
            host, _ = portals.split(self.listen)
            if not self.tls and not portals.is_loopback(host) and not self.insecure_listen:
                raise InvalidArgument(f"--listen {self.listen} is not a loopback address: give "
                                      "--tls-cert/--tls-key/--tls-client-ca, or --insecure-listen")
        if self.overcommit_ratio <= 0:
            raise InvalidArgument("--overcommit-ratio must be positive")
        FillMarks(self.fill_high, self.fill_critical)  # raises InvalidArgument naming both
        if self.fill_interval <= 0 or self.pool_auto_extend < 0:
            raise InvalidArgument("--fill-interval must be positive and --pool-auto-extend not negative")
        if not 0 <= self.metrics_port <= 65535:
            raise InvalidArgument(f"--metrics-port {self.metrics_port}: expected 0 (off) or a TCP port")
        return self

    @property
    def fill_marks(self) -> FillMarks:
        return FillMarks(self.fill_high, self.fill_critical)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"SLUICE_TARGET_{name}", default)


def parser() -> argparse.ArgumentParser:
    d = AgentSettings.__dataclass_fields__
    p = argparse.ArgumentParser(prog="python -m nvme_target", description="Sluice storage-node agent")
    p.add_argument("--backend", default=_env("BACKEND", "kernel"), choices=BACKENDS,
                   help="kernel: LVM thin pool + kernel nvmet (default); spdk: lvols + SPDK nvmf_tgt")
    p.add_argument("--vg", default=_env("VG", d["vg"].default), help="LVM volume group")
    p.add_argument("--pool", default=_env("POOL", d["pool"].default), help="thin pool LV in the VG")
    p.add_argument("--pv", action="append", dest="pvs", metavar="DEVICE",
                   default=[d for d in (_env("PVS") or "").split(",") if d],
                   help="a physical volume of the VG (repeatable). LVM then scans only these: set it "
                        "on a node that also attaches NVMe/TCP volumes")
    p.add_argument("--state-dir", type=Path, default=Path(_env("STATE_DIR", str(d["state_dir"].default))))
    p.add_argument("--portal", action="append", dest="portals", metavar="ADDR|IFACE[:PORT]",
                   help="NVMe/TCP listen address or interface name (repeatable; default 127.0.0.1:4420)")
    p.add_argument("--socket", default=_env("SOCKET", str(d["socket"].default)),
                   help="unix socket for the agent's gRPC service ('' to disable)")
    p.add_argument("--listen", default=_env("LISTEN"), metavar="ADDR|IFACE:PORT",
                   help="TCP address (or interface name) for gRPC; not loopback requires TLS")
    p.add_argument("--tls-cert", type=Path, default=_env("TLS_CERT"))
    p.add_argument("--tls-key", type=Path, default=_env("TLS_KEY"))
    p.add_argument("--tls-client-ca", type=Path, default=_env("TLS_CLIENT_CA"),
                   help="CA that signs the controller's client certificates (required with TLS)")
    p.add_argument("--insecure-listen", action="store_true",
                   help="allow --listen on a non-loopback address without TLS")
    p.add_argument("--overcommit-ratio", type=float, default=float(_env("OVERCOMMIT_RATIO", "4.0")))
    p.add_argument("--fill-high", type=float, default=float(_env("FILL_HIGH", "85")),
                   help="thin pool data or metadata percent past which new volumes, clones and "
                        "snapshots are refused (RESOURCE_EXHAUSTED)")
    p.add_argument("--fill-critical", type=float, default=float(_env("FILL_CRITICAL", "95")),
                   help="percent past which every volume of the pool reports an abnormal condition")
    p.add_argument("--fill-interval", type=float, default=float(_env("FILL_INTERVAL", "10")),
                   help="seconds between background measurements of the pool's fill")
    p.add_argument("--pool-auto-extend", type=float, default=float(_env("POOL_AUTO_EXTEND", "0")),
                   metavar="PERCENT", help="grow the thin pool by this percent when it passes the "
                                           "high mark, while the VG has free extents (0: never)")
    p.add_argument("--queue-when-full", dest="error_when_full", action="store_false",
                   help="kernel: leave the pool's --errorwhenfull alone (default: set it to y, so a "
                        "write to a full pool fails at once instead of queueing for 60 s)")
    p.add_argument("--target-id", default=_env("ID") or gethostname())
    p.add_argument("--fabric", default=_env("FABRIC", segments.DEFAULT_FABRIC),
                   help=f"the storage fabric this target serves, reported as {segments.FABRIC_KEY} "
                        "(default %(default)s); the controller's targets file gives the same segment")
    p.add_argument("--zone", default=_env("ZONE", ""), help=f"this target's zone ({segments.ZONE_KEY})")
    p.add_argument("--topology", action="append", default=[], metavar="KEY=VALUE",
                   help="more keys in this target's topology segment (repeatable)")
    p.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    p.add_argument("--metrics-port", type=int, default=int(_env("METRICS_PORT", "0")),
                   help="serve Prometheus /metrics on this TCP port (default 0: off): pool fill, "
                        "counts, per exported volume target-side I/O")
    p.add_argument("--metrics-bind", default=_env("METRICS_BIND", "0.0.0.0"),
                   help="the address /metrics listens on (default 0.0.0.0)")
    add_spdk_flags(p, "")
    return p


def add_spdk_flags(p: argparse.ArgumentParser, prefix: str) -> None:
    """The SPDK backend's flags (prefix "target-" for the driver's all-in-one mode)."""
    group = p.add_argument_group("SPDK backend (--backend spdk)")
    group.add_argument(f"--{prefix}spdk-socket", type=Path, default=Path(_env("SPDK_SOCKET", "/var/tmp/spdk.sock")),
                       help="nvmf_tgt's JSON-RPC socket")
    group.add_argument(f"--{prefix}spdk-base-bdev", default=_env("SPDK_BASE_BDEV", ""),
                       help="the bdev the lvstore lives on (e.g. an NVMe bdev nvmf_tgt attached)")
    group.add_argument(f"--{prefix}spdk-lvstore", default=_env("SPDK_LVSTORE", "sluice"),
                       help="the lvstore's name (created on the base bdev when missing)")
    group.add_argument(f"--{prefix}spdk-aio-file", default=_env("SPDK_AIO_FILE", ""),
                       help="create the base bdev as an aio bdev on this file or block device")


def from_args(argv: Sequence[str] | None = None) -> AgentSettings:
    ns = parser().parse_args(argv)
    topology = segments.segment(ns.fabric, ns.zone, ns.topology, "--topology")
    return AgentSettings(
        backend=ns.backend, vg=ns.vg, pool=ns.pool, pvs=tuple(ns.pvs), state_dir=ns.state_dir,
        portals=tuple(ns.portals or ("127.0.0.1:4420",)),
        socket=Path(ns.socket) if ns.socket else None, listen=ns.listen or None,
        tls_cert=ns.tls_cert, tls_key=ns.tls_key, tls_client_ca=ns.tls_client_ca,
        insecure_listen=ns.insecure_listen, overcommit_ratio=ns.overcommit_ratio,
        fill_high=ns.fill_high, fill_critical=ns.fill_critical, fill_interval=ns.fill_interval,
        pool_auto_extend=ns.pool_auto_extend, error_when_full=ns.error_when_full,
        target_id=ns.target_id, topology=topology, log_level=ns.log_level,
        spdk_socket=ns.spdk_socket, spdk_base_bdev=ns.spdk_base_bdev, spdk_lvstore=ns.spdk_lvstore,
        spdk_aio_file=ns.spdk_aio_file, metrics_port=ns.metrics_port, metrics_bind=ns.metrics_bind,
    ).validate()
