"""Two storage targets in the lab (two VGs, two listen addresses, two zones) behind one
controller: volumes land where topology asks, capacity is reported per zone, and a
requisite zone without room gives RESOURCE_EXHAUSTED."""

from __future__ import annotations

import time

import grpc
import pytest

from sluice_proto import csi_pb2 as pb
from tests.conformance.client import GiB, MiB, Csi, code_of, error_of, mount_cap
from tests.lab.kernel import lvm, wait_for
from tests.lab.processes import AgentProcess, ControllerProcess, csi_probe

pytestmark = pytest.mark.lab
C = grpc.StatusCode
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
        agent.start(timeout=600)  # a loaded TCG guest can take minutes to start a process
    controller = ControllerProcess(work / "controller", [a, b])
    controller.start(timeout=600)
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


def test_a_black_holed_holder_fails_closed_and_never_makes_a_second_volume(zones, tmp_path):
    """The fault suite: the target holding a name is frozen (SIGSTOP: its socket accepts,
    nothing answers) while the same CreateVolume is retried 20 times. Each retry is
    UNAVAILABLE naming that target, nothing is created on the other, ListVolumes refuses
    to answer without it, Probe still answers at once; once it is back the retry
    succeeds with the first volume."""
    _, a, b = zones
    controller = ControllerProcess(tmp_path / "controller", [a, b],
                                   extra=["--target-read-timeout", "8", "--target-health-interval", "1"])
    controller.start(timeout=600)
    channel = grpc.insecure_channel(f"unix:{controller.endpoint}")
    csi = Csi(channel)
    request = dict(name="pvc-fault", size=64 * MiB)
    # a loaded TCG guest can be slower than the read deadline even with both agents up: that
    # fails closed too (UNAVAILABLE, nothing made), so the first create is retried like the CO does
    first = wait_for(lambda: _try_create(csi, request), 300, "the first create", interval=1)
    holder, other = (a, b) if first.volume_id.startswith(f"{a.target_id}/") else (b, a)
    holder.freeze()
    try:
        began = time.monotonic()
        assert csi_probe(controller.endpoint, timeout=5), "Probe reports the process, not the storage"
        probe_s = time.monotonic() - began
        codes, named = [], 0
        for _ in range(20):
            err = error_of(lambda: create(csi, deadline=30, **request))
            codes.append(err.code())
            named += holder.target_id in err.details()
        listed = error_of(lambda: csi.controller.ListVolumes(pb.ListVolumesRequest(), timeout=30))
        assert other.client.find_volume("pvc-fault") is None, "no second volume on the other target"
    finally:
        holder.thaw()
    print(f"black-holed {holder.target_id}: Probe answered in {probe_s:.3f}s; retries: {codes.count(C.UNAVAILABLE)}"
          f" of 20 UNAVAILABLE, {named} naming the target")
    assert codes == [C.UNAVAILABLE] * 20 and named == 20
    assert listed.code() == C.UNAVAILABLE and holder.target_id in listed.details()
    again = wait_for(lambda: _try_create(csi, request), 60, "the create to succeed once the target is back", interval=1)
    assert again.volume_id == first.volume_id
    assert [v.name for v in other.client.list_volumes()] == []
    assert [v.name for v in holder.client.list_volumes()] == ["pvc-fault"]
    csi.delete(first.volume_id)
    channel.close()
    controller.stop()


def create(csi: Csi, deadline: float, name: str, size: int):
    req = pb.CreateVolumeRequest(name=name, capacity_range=pb.CapacityRange(required_bytes=size),
                                 volume_capabilities=[mount_cap()])
    return csi.controller.CreateVolume(req, timeout=deadline).volume


def _try_create(csi: Csi, request: dict):
    try:
        return create(csi, deadline=30, **request)
    except grpc.RpcError as err:
        if err.code() != C.UNAVAILABLE:
            raise
        return None
