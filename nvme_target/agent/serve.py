"""Start a target agent: build the backend, re-apply saved exports, then serve gRPC on
a unix socket and/or TCP (TLS with client certificates when configured)."""

from __future__ import annotations

import os
from concurrent import futures

import grpc
import structlog

from csi_driver import __version__
from nvme_target import metrics, portals
from nvme_target.agent.authz import Authorizer
from nvme_target.agent.protection import Protection, ProtectionCollector
from nvme_target.agent.server import TargetAgentServicer
from nvme_target.backend import Backend
from nvme_target.kernel_backend import KernelBackend
from nvme_target.lvm import Lvm
from nvme_target.spdk.backend import SpdkBackend, SpdkConfig
from nvme_target.model import TargetInfo
from nvme_target.settings import AgentSettings
from sluice_common import runner
from sluice_common.metrics import serve as serve_metrics
from sluice_common.tlsfiles import ServerTls
from sluice_common.errors import FailedPrecondition, SluiceError
from sluice_proto import target_pb2_grpc

log = structlog.get_logger(__name__)
KERNEL_MODULES = ("nvmet", "nvmet-tcp", "dm-thin-pool")


def build_backend(settings: AgentSettings) -> Backend:
    resolved = tuple(portals.parse(spec) for spec in settings.portals)
    if settings.backend == "spdk":
        config = SpdkConfig(socket=settings.spdk_socket, base_bdev=settings.spdk_base_bdev,
                            lvstore=settings.spdk_lvstore, aio_file=settings.spdk_aio_file or None)
        return SpdkBackend(config, resolved, settings.state_dir, overcommit_ratio=settings.overcommit_ratio)
    if not settings.pvs:
        log.warning("no --pv given: LVM scans every block device, including attached NVMe/TCP "
                    "namespaces, which can block while a controller reconnects")
    return KernelBackend(settings.vg, settings.pool, resolved, settings.state_dir,
                         overcommit_ratio=settings.overcommit_ratio, pvs=settings.pvs,
                         marks=settings.fill_marks, auto_extend_percent=settings.pool_auto_extend,
                         error_when_full=settings.error_when_full, fill_interval=settings.fill_interval)


def load_kernel_modules(settings: AgentSettings | None = None) -> None:
    """The kernel backend's modules (an SPDK target needs none: nvmf_tgt is user space)."""
    if settings is not None and settings.backend != "kernel":
        return
    try:
        runner.run(["modprobe", "-a", *KERNEL_MODULES], timeout=60)
    except SluiceError as exc:  # reported by health(); the agent still serves what it can
        log.warning("kernel modules not loaded", modules=KERNEL_MODULES, error=str(exc))


def require_thin_pool(settings: AgentSettings, lvm: Lvm) -> None:
    """A storage node without its volume group and thin pool refuses to start, and says
    exactly what to run on the node to prepare them."""
    try:
        pool = lvm.report().get(settings.pool)
    except SluiceError as exc:     # no such VG (or LVM cannot read it)
        devices = " ".join(settings.pvs) or "<data device> [...]"
        raise FailedPrecondition(
            f"volume group {settings.vg!r} not found ({exc}). Prepare it once, as root on this node: "
            f"vgcreate {settings.vg} {devices} && "
            f"lvcreate --type thin-pool -l 95%FREE -n {settings.pool} {settings.vg}") from None
    if pool is None or pool.segtype != "thin-pool":
        raise FailedPrecondition(
            f"thin pool {settings.vg}/{settings.pool} not found. Create it once, as root on this node: "
            f"lvcreate --type thin-pool -l 95%FREE -n {settings.pool} {settings.vg}")


def target_info(settings: AgentSettings, backend: Backend) -> TargetInfo:
    return TargetInfo(target_id=settings.target_id, backend=settings.backend,
                      topology=dict(settings.topology), portals=backend.portals(), version=__version__)


CALL_WORKERS = 32
WATCH_STREAMS = 512


def start(settings: AgentSettings, backend: Backend | None = None) -> grpc.Server:
    """Restore exports, then start serving. Returns the running server."""
    if backend is None:
        load_kernel_modules(settings)
        backend = build_backend(settings)
        if settings.backend == "kernel":
            require_thin_pool(settings, backend.lvm)
    metrics.counted(metrics.RESTORES, backend.restore)
    # Each node holds one WatchVolumes stream (one worker thread while open); threads
    # are started on demand, so the ceiling costs nothing until nodes connect.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=CALL_WORKERS + WATCH_STREAMS),
                         interceptors=[Authorizer(backend)])
    protection = Protection.attach(backend)
    target_pb2_grpc.add_TargetAgentServicer_to_server(
        TargetAgentServicer(backend, target_info(settings, backend), protection), server)
    if settings.socket is not None:
        settings.socket.parent.mkdir(parents=True, exist_ok=True)
        settings.socket.unlink(missing_ok=True)
        server.add_insecure_port(f"unix:{settings.socket}")
    if settings.listen is not None:
        address = portals.grpc_address(settings.listen)
        if settings.tls:
            server.add_secure_port(address, _server_credentials(settings))
        else:
            server.add_insecure_port(address)
    server.start()
    if settings.socket is not None:
        os.chmod(settings.socket, 0o660)
    serve_metrics(settings.metrics_bind, settings.metrics_port,
                  [metrics.agent_collector(backend, settings), ProtectionCollector(protection, settings.target_id)])
    log.info("target agent serving", target_id=settings.target_id, socket=str(settings.socket),
             listen=settings.listen, tls=settings.tls, portals=[p.traddr for p in backend.portals()])
    return server


def _server_credentials(settings: AgentSettings) -> grpc.ServerCredentials:
    """Re-read when the files change (a rotated Secret): sluice_common/tlsfiles.py."""
    assert settings.tls_cert and settings.tls_key and settings.tls_client_ca
    return ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca).credentials()
