"""Node conformance on the host: the calls that need no attached volume, through the
driver served in node mode on a real unix socket."""

from __future__ import annotations

import grpc
import pytest

from csi_driver.server import start
from csi_driver.settings import DriverSettings, NodeSettings
from tests.conformance.client import Csi
from tests.conformance.node import NodeConformance


@pytest.fixture
def node(tmp_path):
    settings = DriverSettings(mode="node", endpoint=tmp_path / "csi.sock",
                              node=NodeSettings(state_dir=tmp_path / "state", nvme_dir=tmp_path / "nvme",
                                                topology={"csi.sluice.dev/zone": "z1"}))
    server = start(settings)
    channel = grpc.insecure_channel(f"unix:{settings.endpoint}")
    yield Csi(channel)
    channel.close()
    server.stop(grace=None)


class TestNodeConformanceOnHost(NodeConformance):
    pass
