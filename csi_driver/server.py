"""Assemble the driver for its mode and serve CSI on the unix socket."""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures

import grpc
import structlog

from csi_driver.controller import ControllerService
from csi_driver.groups import GroupSnapshotService
from csi_driver.locks import InFlight
from csi_driver.logcalls import CallLogger
from csi_driver.homes import Homes, keep_sealed
from csi_driver.lookup import Asker
from csi_driver.metrics import CallMetrics, driver_collectors
from csi_driver.servicers.controller import ControllerServicer
from csi_driver.servicers.group_controller import GroupControllerServicer
from csi_driver.node import hostid
from csi_driver.node.service import NodeConfig, NodeService
from csi_driver.servicers.identity import IdentityServicer
from csi_driver.servicers.node import NodeServicer
from csi_driver.settings import DriverSettings, NodeSettings
from csi_driver.snapshots import SnapshotService
from csi_driver.targets import Target, TargetConfig, Targets, connect, load_config
from nvme_target import portals
from nvme_target.agent.protection import Protection
from nvme_target.agent.serve import build_backend, load_kernel_modules
from nvme_target.metrics import RESTORES, counted
from sluice_common import metrics, runner
from sluice_common.errors import SluiceError
from sluice_proto import csi_pb2_grpc

log = structlog.get_logger(__name__)
SEAL_INTERVAL = 30.0  # seconds between sweeps until the name homes are sealed (homes.py)


def build_targets(settings: DriverSettings) -> Targets:
    if settings.local_target is not None:
        local = settings.local_target
        load_kernel_modules(local)
        backend = build_backend(local)
        counted(RESTORES, backend.restore)
        Protection.attach(backend)  # latency protection for the in-process target
        config = TargetConfig(id=local.target_id, topology=dict(local.topology))
        return Targets([Target(config, backend)])
    assert settings.targets_config is not None
    return connect(load_config(settings.targets_config), settings.read_timeout)


def start(settings: DriverSettings, targets: Targets | None = None) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), interceptors=[CallLogger(), CallMetrics()])
    checks = []
    inflight = InFlight()
    if targets is None and (settings.controller or settings.targets_config is not None):
        targets = build_targets(settings)
    if settings.controller:
        assert targets is not None
        asker = Asker(settings.read_timeout)
        homes = Homes(targets, asker)
        volumes = ControllerService(targets, inflight, asker, settings.max_volumes_per_node,
                                    settings.default_auth, homes)
        csi_pb2_grpc.add_ControllerServicer_to_server(
            ControllerServicer(volumes, SnapshotService(targets, inflight, asker)), server)
        csi_pb2_grpc.add_GroupControllerServicer_to_server(
            GroupControllerServicer(GroupSnapshotService(targets, inflight)), server)
        HealthWatch(targets, settings.health_interval).start()
        keep_sealed(homes, SEAL_INTERVAL)
    if settings.node is not None:
        node = build_node(settings.node, inflight, targets)
        csi_pb2_grpc.add_NodeServicer_to_server(NodeServicer(node), server)
        checks.append(node_ready)

    def ready() -> bool:
        return all(check() for check in checks)

    csi_pb2_grpc.add_IdentityServicer_to_server(
        IdentityServicer(settings.driver_name, settings.controller, ready), server)
    settings.endpoint.parent.mkdir(parents=True, exist_ok=True)
    settings.endpoint.unlink(missing_ok=True)
    server.add_insecure_port(f"unix:{settings.endpoint}")
    server.start()
    if settings.node is not None:
        node.start()
    os.chmod(settings.endpoint, 0o660)
    metrics.serve(settings.metrics_bind, settings.metrics_port, driver_collectors(settings, targets))
    log.info("csi driver serving", mode=settings.mode, endpoint=str(settings.endpoint),
             driver=settings.driver_name)
    return server


def build_node(node: NodeSettings, inflight: InFlight, targets: Targets | None = None) -> NodeService:
    """`targets`: watched for live limit changes; without them (a node plugin run without
    --targets-config) limits change only when a volume is staged again."""
    try:
        runner.run(["modprobe", "-a", "nvme-tcp", "nvme-fabrics"], timeout=60)
    except SluiceError as exc:  # Probe reports it: /dev/nvme-fabrics stays missing
        log.warning("nvme-tcp not loaded", error=str(exc))
    host_traddr = portals.interface_address(node.storage_iface) if node.storage_iface else ""
    config = NodeConfig(state_dir=node.state_dir, topology=dict(node.topology), max_volumes=node.max_volumes,
                        host_iface=node.storage_iface, host_traddr=host_traddr, cgroup_root=node.cgroup_root)
    if targets is None:
        log.warning("no --targets-config: live QoS changes reach this node only when a volume is staged again")
    return NodeService(hostid.load_or_create(node.nvme_dir), config, inflight, targets)


def node_ready() -> bool:
    """The node can attach volumes when the kernel's NVMe fabrics interface is there."""
    return os.path.exists("/dev/nvme-fabrics")


class HealthWatch(threading.Thread):
    """Checks every target's health in the background and logs who does not answer.
    The controller's Probe reports the process, never the storage: a target outage
    must not get the controller restarted (that would not bring the target back)."""

    def __init__(self, targets: Targets, interval: float) -> None:
        super().__init__(name="target-health", daemon=True)
        self.targets, self.interval = targets, interval

    def run(self) -> None:
        while True:
            for target in self.targets:
                self._check(target)
            time.sleep(self.interval)

    @staticmethod
    def _check(target: Target) -> None:
        try:
            if not target.healthy():
                log.warning("target not answering", target=target.id, problem=target.problem)
        except Exception:  # a background loop logs and goes on
            log.exception("target health check failed", target=target.id)
