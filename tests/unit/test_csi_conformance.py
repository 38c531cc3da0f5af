"""The CSI conformance suite against the driver served on a real unix socket, with an
in-memory target (the same suite runs in the lab against the real kernel)."""

from __future__ import annotations

import grpc
import pytest

from csi_driver.server import start
from csi_driver.settings import DriverSettings
from csi_driver.targets import Target, TargetConfig, Targets
from tests.conformance.client import Csi
from tests.conformance.group_controller import GroupControllerConformance
from tests.conformance.identity_controller import IdentityControllerConformance
from tests.fakes.memory_backend import MemoryBackend

NODES = ("nqn.2014-08.org.nvmexpress:uuid:11111111-1111-4111-8111-111111111111",
         "nqn.2014-08.org.nvmexpress:uuid:22222222-2222-4222-8222-222222222222")


@pytest.fixture
def csi(tmp_path):
    targets = Targets([Target(TargetConfig(id="local", topology={"csi.sluice.dev/zone": "z1"}),
                              MemoryBackend(pool_bytes=8 << 30))])
    settings = DriverSettings(mode="controller", endpoint=tmp_path / "csi.sock")
    server = start(settings, targets)
    channel = grpc.insecure_channel(f"unix:{settings.endpoint}")
    yield Csi(channel)
    channel.close()
    server.stop(grace=None)


@pytest.fixture
def node_ids():
    return NODES


class TestConformanceInMemory(IdentityControllerConformance, GroupControllerConformance):
    pass
