"""Two storage targets in the lab (two VGs, two listen addresses, two zones) behind one
controller: volumes land where topology asks, capacity is reported per zone, and a
requisite zone without room gives RESOURCE_EXHAUSTED."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from csi_driver import placement
from sluice_proto import csi_pb2 as pb
from sluice_proto import csi_pb2_grpc
from tests.conformance.client import GiB, MiB, Csi, code_of, error_of, mount_cap
from tests.lab.kernel import lvm, wait_for
from tests.lab.processes import AgentProcess, ControllerProcess

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


def test_a_black_holed_target_blocks_only_the_names_homed_there(zones, tmp_path):
    """The fault suite: the target holding a name (its home) is frozen (SIGSTOP: its
    socket accepts, nothing answers) while the same CreateVolume is retried 20 times,
    alongside a new name homed there too. Each retry is UNAVAILABLE naming that target
    and nothing is created on the other; new names homed on the live target still
    create; ListVolumes refuses to answer without it; Probe answers from memory (median
    < 1 s); once it is back both blocked names succeed, with the first volume kept."""
    _, a, b = zones
    controller = ControllerProcess(tmp_path / "controller", [a, b],
                                   extra=["--target-read-timeout", "8", "--target-health-interval", "1"])
    controller.start(timeout=600)
    wait_for(lambda: "name homes sealed" in controller.log.read_text(), 300, "the sweep of the name homes")
    channel = grpc.insecure_channel(f"unix:{controller.endpoint}")
    csi = Csi(channel)
    request = dict(name="pvc-fault", size=64 * MiB)
    # a loaded TCG guest can be slower than the read deadline even with both agents up: that
    # fails closed too (UNAVAILABLE, nothing made), so the first create is retried like the CO does
    first = wait_for(lambda: _try_create(csi, request), 300, "the first create", interval=1)
    holder, other = (a, b) if first.volume_id.startswith(f"{a.target_id}/") else (b, a)
    ids = [a.target_id, b.target_id]
    assert homed_on(holder.target_id, ids, 1, "pvc-fault") == ["pvc-fault"], "it was placed on its home"
    blocked = homed_on(holder.target_id, ids, 1, "pvc-new-blocked")[0]
    free = homed_on(other.target_id, ids, 2, "pvc-new-free")
    holder.freeze()
    try:
        probe_s = probe_times(controller.endpoint, 7)
        codes, named = [], 0
        with ThreadPoolExecutor(2) as pool:
            for _ in range(20):
                for err in pool.map(lambda n: error_of(lambda: create(csi, deadline=30, name=n, size=64 * MiB)),
                                    ["pvc-fault", blocked]):
                    codes.append(err.code())
                    named += holder.target_id in err.details()
        made_free = [create(csi, deadline=60, name=n, size=64 * MiB) for n in free]
        listed = error_of(lambda: csi.controller.ListVolumes(pb.ListVolumesRequest(), timeout=30))
        on_other = sorted(v.name for v in other.client.list_volumes())
    finally:
        holder.thaw()
    print(f"black-holed {holder.target_id}: Probe median {statistics.median(probe_s) * 1000:.1f} ms "
          f"(max {max(probe_s) * 1000:.1f} ms of {len(probe_s)}); retries of 2 names homed there: "
          f"{codes.count(C.UNAVAILABLE)} of {len(codes)} UNAVAILABLE, {named} naming the target; "
          f"{len(made_free)} new names homed on {other.target_id} created")
    assert statistics.median(probe_s) < 1.0, "Probe is the process's own health, answered from memory"
    assert codes == [C.UNAVAILABLE] * 40 and named == 40
    assert on_other == sorted(free), "no volume of a blocked name on the other target"
    assert all(v.volume_id.startswith(f"{other.target_id}/") for v in made_free)
    assert listed.code() == C.UNAVAILABLE and holder.target_id in listed.details()
    again = wait_for(lambda: _try_create(csi, request), 60, "the create to succeed once the target is back", interval=1)
    assert again.volume_id == first.volume_id
    late = wait_for(lambda: _try_create(csi, dict(name=blocked, size=64 * MiB)), 60, "the blocked new name")
    assert late.volume_id.startswith(f"{holder.target_id}/")
    assert sorted(v.name for v in other.client.list_volumes()) == sorted(free)
    assert sorted(v.name for v in holder.client.list_volumes()) == sorted(["pvc-fault", blocked])
    for vol in (first, late, *made_free):
        csi.delete(vol.volume_id)
    channel.close()
    controller.stop()


def homed_on(target_id: str, target_ids: list[str], count: int, prefix: str) -> list[str]:
    """`count` names starting with `prefix` whose home (placement.home) is `target_id`."""
    names = [prefix, *(f"{prefix}-{i}" for i in range(1000))]
    return [n for n in names if min(target_ids, key=lambda t: placement.score(n, t)) == target_id][:count]


def probe_times(endpoint, count: int) -> list[float]:
    """Seconds each of `count` Probe calls took on one channel (each bounded at 5 s)."""
    channel = grpc.insecure_channel(f"unix:{endpoint}")
    stub = csi_pb2_grpc.IdentityStub(channel)
    times = []
    try:
        for _ in range(count):
            began = time.monotonic()
            assert stub.Probe(pb.ProbeRequest(), timeout=5).ready.value, "Probe reports the process, not the storage"
            times.append(time.monotonic() - began)
    finally:
        channel.close()
    return times


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
