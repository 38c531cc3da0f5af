"""One storage node, a controller and a node plugin, started as production starts them,
with CSI clients for the controller and the node: the cluster most node lab tests run in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from tests.conformance.client import Csi
from tests.lab.processes import AgentProcess, ControllerProcess, NodeProcess


@dataclass(frozen=True)
class Cluster:
    agent: AgentProcess
    controller: ControllerProcess
    node: NodeProcess
    ctl: Csi        # the controller's CSI services
    node_csi: Csi   # the node plugin's CSI services


@contextlib.contextmanager
def running(thin_pool: tuple[str, str], work: Path, zone: str = "z1") -> Iterator[Cluster]:
    """The cluster on the lab thin pool, in `work`; on exit stopped, and every volume
    the agent still holds unexported and deleted."""
    vg, pool = thin_pool
    agent = AgentProcess(work / "agent", vg, pool, "/dev/vda", target_id="local", zone=zone)
    agent.start(timeout=300)
    controller = ControllerProcess(work / "controller", [agent])
    controller.start(timeout=300)
    node = NodeProcess(work / "node", zone=zone)
    node.start(timeout=300)
    channels = [grpc.insecure_channel(f"unix:{p.endpoint}") for p in (controller, node)]
    try:
        yield Cluster(agent, controller, node, Csi(channels[0]), Csi(channels[1]))
    finally:
        for ch in channels:
            ch.close()
        node.stop()
        controller.stop()
        agent.empty()
        agent.stop()
