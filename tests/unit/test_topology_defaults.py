"""Topology with zero edits: nodes, targets and the controller's targets file share the
fabric key by default, the zone is added when the operator gives one, and a value that
cannot be a Node label is refused naming the flag."""

from __future__ import annotations

import json

import pytest

from csi_driver import settings as driver_settings
from csi_driver.targets import Target, TargetConfig, load_config
from nvme_target import settings as agent_settings
from sluice_common.errors import InvalidArgument

FABRIC = "csi.sluice.dev/fabric"
ZONE = "csi.sluice.dev/zone"


def node_segment(*argv: str) -> dict:
    return dict(driver_settings.from_args(["--mode=node", *argv]).node.topology)


def test_a_node_reports_the_default_fabric_with_no_flags():
    assert node_segment() == {FABRIC: "default"}


def test_the_zone_and_fabric_come_from_flags_or_environment(monkeypatch):
    assert node_segment("--node-zone=eu-1a", "--fabric=rdma") == {FABRIC: "rdma", ZONE: "eu-1a"}
    monkeypatch.setenv("SLUICE_NODE_ZONE", "eu-1b")
    assert node_segment() == {FABRIC: "default", ZONE: "eu-1b"}


def test_an_agent_reports_the_default_fabric_and_its_zone(monkeypatch):
    assert agent_settings.from_args([]).topology == {FABRIC: "default"}
    monkeypatch.setenv("SLUICE_TARGET_ZONE", "eu-1a")
    assert agent_settings.from_args([]).topology == {FABRIC: "default", ZONE: "eu-1a"}


def test_a_target_entry_without_topology_serves_the_default_fabric(tmp_path):
    path = tmp_path / "targets.json"
    path.write_text(json.dumps({"targets": [{"id": "a", "endpoint": "a:7443"},
                                            {"id": "b", "endpoint": "b:7443", "topology": {ZONE: "z"}}]}))
    a, b = load_config(path)
    assert a.topology == {FABRIC: "default"} and b.topology == {ZONE: "z"}
    plain = Target(TargetConfig(id="a", topology=a.topology), backend=None)
    assert plain.serves(node_segment()) and plain.serves(node_segment("--node-zone=z"))
    assert not plain.serves(node_segment("--fabric=other"))


@pytest.mark.parametrize("argv, flag", [
    (["--node-zone=eu 1"], "zone"), (["--fabric=-x"], "fabric"), (["--node-topology=k=" + "v" * 64], "--node-topology"),
])
def test_a_value_that_cannot_be_a_label_is_refused(argv, flag):
    with pytest.raises(InvalidArgument, match=flag):
        node_segment(*argv)
