"""The shipped targets file and a node started with the shipped flags, through the
controller's gRPC socket as external-provisioner calls it: capacity is published for the
node's segment, and a claim provisions both ways external-provisioner asks —
WaitForFirstConsumer (requisite and preferred = the chosen node's segment) and Immediate
(requisite = every node's segment, preferred = one of them, shuffled) — with a PV
topology the nodes match."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from csi_driver import settings as driver_settings
from csi_driver.server import start
from csi_driver.settings import DriverSettings
from csi_driver.targets import Target, Targets, load_config
from sluice_proto import csi_pb2 as csi
from tests.conformance.client import Csi
from tests.fakes.memory_backend import MemoryBackend
from tests.unit.test_deploy import DEPLOY

SHIPPED_TARGETS = DEPLOY / "overlays" / "example" / "targets.json"


@pytest.fixture
def shipped(tmp_path):
    configs = [dataclasses.replace(c, endpoint=None) for c in load_config(SHIPPED_TARGETS)]
    targets = Targets([Target(c, MemoryBackend(pool_bytes=8 << 30)) for c in configs])
    settings = DriverSettings(mode="controller", endpoint=tmp_path / "csi.sock")
    server = start(settings, targets)
    channel = grpc.insecure_channel(f"unix:{settings.endpoint}")
    node = dict(driver_settings.from_args(["--mode=node"]).node.topology)
    yield Csi(channel), node
    channel.close()
    server.stop(grace=None)


def test_capacity_is_published_for_the_nodes_segment(shipped):
    client, node = shipped
    got = client.controller.GetCapacity(csi.GetCapacityRequest(accessible_topology=csi.Topology(segments=node)),
                                        timeout=30)
    assert got.available_capacity > 0


@pytest.mark.parametrize("binding", ["WaitForFirstConsumer", "Immediate"])
def test_a_claim_provisions_on_the_shipped_topology(shipped, binding):
    client, node = shipped
    other_node = dict(node)   # Immediate: every node's segment; all nodes report the same default
    requisite = [node] if binding == "WaitForFirstConsumer" else [node, other_node]
    volume = client.create(f"pvc-{binding.lower()}", requisite=requisite, preferred=[node])
    assert [dict(t.segments) for t in volume.accessible_topology] == [node]
