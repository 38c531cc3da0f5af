"""Two storage targets in the lab (two VGs, two listen addresses, two zones) behind one
controller: volumes land where topology asks, capacity is reported per zone, and a
requisite zone without room gives RESOURCE_EXHAUSTED."""

from __future__ import annotations

import grpc
import pytest

from tests.conformance.client import GiB, MiB, Csi, code_of
from tests.lab.kernel import lvm
from tests.lab.processes import AgentProcess, ControllerProcess

pytestmark = pytest.mark.lab
ZONE = "csi.sluice.dev/zone"


@pytest.fixture(scope="module")
def zones(thin_pool, tmp_path_factory):
    """Target "a" on the shared lab pool (vda, 127.0.0.1), target "b" on its own 4 GiB pool
    (vdb, 127.0.0.2)."""
    vg_a, pool_a = thin_pool
    lvm("pvcreate", "-q", "/dev/vdb")
    lvm("vgcreate", "-q", "labvg2", "/dev/vdb")
    lvm("lvcreate", "-q", "--type", "thin-pool", "-L", "4G", "-n", "pool", "labvg2")
    work = tmp_path_factory.mktemp("zones")
    a = AgentProcess(work / "a", vg_a, pool_a, "/dev/vda", portal="127.0.0.1:4420", target_id="target-a", zone="a")
    b = AgentProcess(work / "b", "labvg2", "pool", "/dev/vdb", portal="127.0.0.2:4420", target_id="target-b", zone="b")
    for agent in (a, b):
        agent.start()
    controller = ControllerProcess(work / "controller", [a, b])
    controller.start()
    channel = grpc.insecure_channel(f"unix:{controller.endpoint}")
    yield Csi(channel), a, b
    channel.close()
    controller.stop()
    for agent in (a, b):
        agent.empty()
        agent.stop()
    lvm("vgremove", "-q", "-f", "labvg2")


def test_volumes_land_where_topology_asks(zones):
    csi, a, b = zones
    in_b = csi.create("pvc-zone-b", size=64 * MiB, requisite=[{ZONE: "b"}])
    assert in_b.volume_id.startswith("target-b/")
    assert dict(in_b.accessible_topology[0].segments) == {ZONE: "b"}
    assert [v.name for v in b.client.list_volumes()] == ["pvc-zone-b"]
    preferred_a = csi.create("pvc-pref-a", size=64 * MiB, requisite=[{ZONE: "a"}, {ZONE: "b"}],
                             preferred=[{ZONE: "a"}, {ZONE: "b"}])
    assert preferred_a.volume_id.startswith("target-a/")
    ctx = csi.publish(in_b.volume_id, "nqn.2014-08.org.nvmexpress:uuid:33333333-3333-4333-8333-333333333333")
    assert ctx["nvme.portals"] == "127.0.0.2:4420"
    csi.unpublish(in_b.volume_id, "")
    for vol in (in_b, preferred_a):
        csi.delete(vol.volume_id)


def test_capacity_is_per_zone(zones):
    csi, a, b = zones
    cap_a, cap_b = csi.capacity({ZONE: "a"}), csi.capacity({ZONE: "b"})
    assert cap_a == a.client.capacity().available_bytes
    assert cap_b == b.client.capacity().available_bytes
    assert csi.capacity() == cap_a + cap_b
    vol = csi.create("pvc-cap-b", size=512 * MiB, requisite=[{ZONE: "b"}])
    assert csi.capacity({ZONE: "b"}) == cap_b - vol.capacity_bytes
    assert csi.capacity({ZONE: "a"}) == cap_a
    csi.delete(vol.volume_id)


def test_requisite_zone_without_room_is_resource_exhausted(zones):
    csi, a, b = zones
    room_b = csi.capacity({ZONE: "b"})
    too_big = room_b + 1 * GiB
    assert too_big < csi.capacity({ZONE: "a"}), "zone a could hold it: only the requisite zone lacks room"
    assert code_of(lambda: csi.create("pvc-too-big", size=too_big, requisite=[{ZONE: "b"}])) == \
        grpc.StatusCode.RESOURCE_EXHAUSTED
    assert b.client.list_volumes() == [] and a.client.list_volumes() == []
