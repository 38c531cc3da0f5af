"""Assemble the driver for its mode and serve CSI on the unix socket."""

from __future__ import annotations

import os
from concurrent import futures

import grpc
import structlog

from csi_driver.controller import ControllerService
from csi_driver.locks import InFlight
from csi_driver.logcalls import CallLogger
from csi_driver.servicers.controller import ControllerServicer
from csi_driver.servicers.identity import IdentityServicer
from csi_driver.settings import DriverSettings
from csi_driver.snapshots import SnapshotService
from csi_driver.targets import Target, TargetConfig, Targets, connect, load_config
from nvme_target.agent.serve import build_backend, load_kernel_modules
from sluice_proto import csi_pb2_grpc

log = structlog.get_logger(__name__)


def build_targets(settings: DriverSettings) -> Targets:
    if settings.local_target is not None:
        local = settings.local_target
        load_kernel_modules()
        backend = build_backend(local)
        backend.restore()
        config = TargetConfig(id=local.target_id, topology=dict(local.topology))
        return Targets([Target(config, backend)])
    assert settings.targets_config is not None
    return connect(load_config(settings.targets_config))


def start(settings: DriverSettings, targets: Targets | None = None) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), interceptors=[CallLogger()])
    ready = lambda: True  # noqa: E731 - replaced below when there are targets to ask
    if settings.controller:
        targets = targets if targets is not None else build_targets(settings)
        inflight = InFlight()
        csi_pb2_grpc.add_ControllerServicer_to_server(
            ControllerServicer(ControllerService(targets, inflight), SnapshotService(targets, inflight)), server)
        ready = lambda: probe(targets)  # noqa: E731
    csi_pb2_grpc.add_IdentityServicer_to_server(
        IdentityServicer(settings.driver_name, settings.controller, ready), server)
    settings.endpoint.parent.mkdir(parents=True, exist_ok=True)
    settings.endpoint.unlink(missing_ok=True)
    server.add_insecure_port(f"unix:{settings.endpoint}")
    server.start()
    os.chmod(settings.endpoint, 0o660)
    log.info("csi driver serving", mode=settings.mode, endpoint=str(settings.endpoint),
             driver=settings.driver_name)
    return server


def probe(targets: Targets) -> bool:
    """Ready when at least one target answers; the silent ones are logged by name."""
    down = [t for t in targets if not t.healthy()]
    for target in down:
        log.warning("target not answering", target=target.id, problem=target.problem)
    return len(down) < len(list(targets))
