"""Driver settings: flags (with environment defaults) read once into a frozen,
validated object. Nothing else in the driver reads flags or environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from csi_driver import ids
from nvme_target import dhchap, portals
from nvme_target.settings import BACKENDS, AgentSettings, add_spdk_flags
from sluice_common import metrics, topology
from sluice_common.errors import InvalidArgument

MODES = ("controller", "node", "all")
DRIVER_NAME = "csi.sluice.dev"


@dataclass(frozen=True)
class NodeSettings:
    state_dir: Path = Path("/var/lib/sluice/node")
    nvme_dir: Path = Path("/etc/nvme")
    topology: Mapping[str, str] = field(default_factory=dict)
    max_volumes: int = 256
    storage_iface: str = ""
    cgroup_root: Path = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class DriverSettings:
    mode: str = "all"
    endpoint: Path = Path("/csi/csi.sock")
    driver_name: str = DRIVER_NAME
    targets_config: Path | None = None
    local_target: AgentSettings | None = None   # all-in-one: the in-process target
    node: NodeSettings | None = None            # node and all modes
    log_level: str = "info"
    max_volumes_per_node: int = 256   # the controller refuses a publish past it (RESOURCE_EXHAUSTED)
    read_timeout: float = 30.0        # seconds one lookup or list call waits for a target
    health_interval: float = 10.0     # seconds between background target health checks
    metrics_port: int = 0             # 0: no /metrics endpoint
    metrics_bind: str = "0.0.0.0"
    default_auth: str = "bidirectional"  # nvme.auth of volumes whose StorageClass does not say

    @property
    def controller(self) -> bool:
        return self.mode in ("controller", "all")


def endpoint_path(value: str) -> Path:
    """`unix:///csi/csi.sock`, `unix:/csi/csi.sock` or a plain path."""
    if value.startswith("unix://"):
        value = value[len("unix://"):]
    elif value.startswith("unix:"):
        value = value[len("unix:"):]
    if not value.startswith("/"):
        raise InvalidArgument(f"--endpoint {value!r}: expected unix:///absolute/path.sock")
    return Path(value)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m csi_driver", description="Sluice CSI driver")
    p.add_argument("--mode", choices=MODES, default=_env("SLUICE_MODE", "all"))
    p.add_argument("--endpoint", default=_env("CSI_ENDPOINT", "unix:///csi/csi.sock"),
                   help="the CSI unix socket (default unix:///csi/csi.sock; env CSI_ENDPOINT)")
    p.add_argument("--driver-name", default=_env("SLUICE_DRIVER_NAME", DRIVER_NAME))
    p.add_argument("--targets-config", type=Path, default=_env("SLUICE_TARGETS_CONFIG"),
                   help="JSON file listing the storage targets (a mounted ConfigMap): the controller "
                        "places volumes on them; the node watches them for live QoS changes")
    p.add_argument("--log-level", default=_env("SLUICE_LOG_LEVEL", "info"))
    p.add_argument("--max-volumes-per-node", type=int, default=256,
                   help="volumes one node may have attached: the node reports it, the controller refuses a "
                        "publish past it (give both the same value)")
    ctl = p.add_argument_group("controller (--mode controller, all)")
    ctl.add_argument("--target-read-timeout", type=float, default=30.0,
                     help="seconds one name lookup or list call waits for a target before the request fails "
                          "UNAVAILABLE naming it (keep it well under the sidecars' --timeout)")
    ctl.add_argument("--default-nvme-auth", choices=dhchap.MODES, default="bidirectional",
                     help="DH-HMAC-CHAP for volumes whose StorageClass has no nvme.auth (default %(default)s)")
    ctl.add_argument("--target-health-interval", type=float, default=10.0,
                     help="seconds between background target health checks (logged; never on the Probe path)")
    p.add_argument("--metrics-port", type=int, default=int(_env("SLUICE_METRICS_PORT", "0")),
                   help="serve Prometheus /metrics on this TCP port (default 0: off); the node plugin's "
                        "per-volume and per-pod metrics, the controller's per-call and per-target ones")
    p.add_argument("--metrics-bind", default=_env("SLUICE_METRICS_BIND", "0.0.0.0"),
                   help="the address /metrics listens on (default 0.0.0.0)")
    node = p.add_argument_group("node plugin (--mode node, all)")
    node.add_argument("--node-state-dir", type=Path, default=Path("/var/lib/sluice/node"),
                      help="where staging-record index entries live")
    node.add_argument("--nvme-config-dir", type=Path, default=Path(_env("SLUICE_NVME_DIR", "/etc/nvme")),
                      help="hostnqn and hostid live here (created once if missing)")
    node.add_argument("--fabric", default=_env("SLUICE_FABRIC", topology.DEFAULT_FABRIC),
                      help=f"the storage fabric this node (and, in --mode all, the in-process target) is on: "
                           f"reported as {topology.FABRIC_KEY} (default %(default)s; env SLUICE_FABRIC)")
    node.add_argument("--node-zone", default=_env("SLUICE_NODE_ZONE", ""),
                      help=f"this node's zone, reported as {topology.ZONE_KEY} (env SLUICE_NODE_ZONE)")
    node.add_argument("--node-topology", action="append", default=[], metavar="KEY=VALUE",
                      help="more keys in this node's topology segment (repeatable)")
    node.add_argument("--storage-iface", default=_env("SLUICE_STORAGE_IFACE", ""),
                      help="connect to targets through this network interface (host_iface/host_traddr)")
    node.add_argument("--cgroup-root", type=Path, default=Path(_env("SLUICE_CGROUP_ROOT", "/sys/fs/cgroup")),
                      help="the host's cgroup filesystem, where kubelet's pod cgroups are (v2, or v1 with blkio)")
    local = p.add_argument_group("in-process target (--mode all)")
    local.add_argument("--target-id", default="local")
    local.add_argument("--target-vg", default="sluice")
    local.add_argument("--target-pool", default="pool")
    local.add_argument("--target-pv", action="append", default=[], metavar="DEVICE")
    local.add_argument("--target-portal", action="append", default=[], metavar="ADDR|IFACE[:PORT]")
    local.add_argument("--target-state-dir", type=Path, default=Path("/var/lib/sluice/target"))
    local.add_argument("--target-overcommit-ratio", type=float, default=4.0)
    local.add_argument("--target-topology", action="append", default=[], metavar="KEY=VALUE")
    local.add_argument("--target-backend", choices=BACKENDS, default="kernel")
    add_spdk_flags(p, "target-")
    return p


def from_args(argv: Sequence[str] | None = None) -> DriverSettings:
    ns = parser().parse_args(argv)
    if not ns.driver_name or len(ns.driver_name) > 63:
        raise InvalidArgument("--driver-name must be 1..63 characters")
    local = None
    if ns.mode == "all":
        ids.check_target_id(ns.target_id)
        for spec in ns.target_portal:
            portals.split(spec)
        local = AgentSettings(
            vg=ns.target_vg, pool=ns.target_pool, pvs=tuple(ns.target_pv),
            portals=tuple(ns.target_portal or ("127.0.0.1:4420",)), socket=None, listen=None,
            state_dir=ns.target_state_dir, overcommit_ratio=ns.target_overcommit_ratio,
            target_id=ns.target_id,
            topology=topology.segment(ns.fabric, "", ns.target_topology, "--target-topology"),
            backend=ns.target_backend, spdk_socket=ns.target_spdk_socket, spdk_base_bdev=ns.target_spdk_base_bdev,
            spdk_lvstore=ns.target_spdk_lvstore, spdk_aio_file=ns.target_spdk_aio_file,
        ).validate(serving=False)
    elif ns.mode == "controller" and ns.targets_config is None:
        raise InvalidArgument("--mode controller needs --targets-config")
    if ns.max_volumes_per_node <= 0:
        raise InvalidArgument("--max-volumes-per-node must be positive")
    if ns.target_read_timeout <= 0 or ns.target_health_interval <= 0:
        raise InvalidArgument("--target-read-timeout and --target-health-interval must be positive")
    node = None
    if ns.mode in ("node", "all"):
        node = NodeSettings(state_dir=ns.node_state_dir, nvme_dir=ns.nvme_config_dir,
                            topology=topology.segment(ns.fabric, ns.node_zone, ns.node_topology,
                                                      "--node-topology"),
                            max_volumes=ns.max_volumes_per_node, storage_iface=ns.storage_iface,
                            cgroup_root=ns.cgroup_root)
    return DriverSettings(mode=ns.mode, endpoint=endpoint_path(ns.endpoint), driver_name=ns.driver_name,
                          targets_config=ns.targets_config, local_target=local, node=node,
                          log_level=ns.log_level, max_volumes_per_node=ns.max_volumes_per_node,
                          read_timeout=ns.target_read_timeout, health_interval=ns.target_health_interval,
                          metrics_port=metrics.check_port(ns.metrics_port, "--metrics-port"),
                          metrics_bind=ns.metrics_bind, default_auth=ns.default_nvme_auth)

