"""The CSI conformance suite (Identity + Controller) against `python -m csi_driver
--mode controller` over a target agent on the real kernel, both as separate processes,
through the real unix socket."""

from __future__ import annotations

import grpc
import pytest

from tests.conformance.client import Csi
from tests.conformance.identity_controller import IdentityControllerConformance
from tests.lab.kernel import new_host_nqn
from tests.lab.processes import AgentProcess, ControllerProcess

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def stack(thin_pool, tmp_path_factory):
    vg, pool = thin_pool
    work = tmp_path_factory.mktemp("csi-stack")
    agent = AgentProcess(work / "agent", vg, pool, "/dev/vda", target_id="local", zone="z1")
    agent.start(timeout=600)  # a loaded TCG guest can take minutes to start a process
    controller = ControllerProcess(work / "controller", [agent])
    controller.start(timeout=600)
    yield agent, controller
    controller.stop()
    agent.empty()
    agent.stop()


@pytest.fixture
def csi(stack):
    agent, controller = stack
    channel = grpc.insecure_channel(f"unix:{controller.endpoint}")
    yield Csi(channel)
    channel.close()
    agent.empty()


@pytest.fixture(scope="module")
def node_ids():
    return new_host_nqn(), new_host_nqn()


class TestConformanceOnTheKernel(IdentityControllerConformance):
    pass
