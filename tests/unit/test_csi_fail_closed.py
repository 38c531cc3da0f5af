"""Host tests of the controller under target failure, with in-memory targets whose
read path can go silent (raise UNAVAILABLE, or hang past the lookup deadline):
never two volumes for one name, lists that never drop a target, the attach limit,
incompatible publications, and a Probe that does not wait on storage."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import pytest

from csi_driver import metrics
from csi_driver import placement
from csi_driver.capabilities import Capability
from csi_driver.controller import ControllerService
from csi_driver.lookup import Asker
from csi_driver.server import start
from csi_driver.settings import DriverSettings
from csi_driver.snapshots import SnapshotService
from csi_driver.targets import Target, TargetConfig, Targets
from sluice_common.errors import (
    AlreadyExists, Busy, FailedPrecondition, NoSpace, StaleToken, Unavailable,
)
from sluice_proto import csi_pb2, csi_pb2_grpc
from nvme_target.model import Health
from tests.fakes.memory_backend import MemoryBackend

MiB = 1 << 20
RW = [Capability("mount", "SINGLE_NODE_WRITER")]
NODES = [f"nqn.2014-08.org.nvmexpress:uuid:{i:08d}-1111-4111-8111-111111111111" for i in range(4)]


class Silent:
    """A target's read path that can stop answering: `mode` "raise" (connection refused)
    or "hang" (a black hole: no answer until released)."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend
        self.mode = ""
        self.released = threading.Event()

    def __getattr__(self, attr):
        real = getattr(self.backend, attr)
        if not callable(real):
            return real

        def call(*args, **kwargs):
            if self.mode == "raise":
                raise Unavailable("connection refused")
            if self.mode == "hang":
                self.released.wait(30)
                raise Unavailable("deadline exceeded")
            return real(*args, **kwargs)
        return call


def build(n: int, pool_bytes: int = 8 << 30):
    backends = [MemoryBackend(pool_bytes=pool_bytes) for _ in range(n)]
    reads = [Silent(b) for b in backends]
    targets = Targets([Target(TargetConfig(id=f"t{i}", topology={"csi.sluice.dev/zone": "z"}), b, r)
                       for i, (b, r) in enumerate(zip(backends, reads, strict=True))])
    asker = Asker(timeout=0.5)
    return ControllerService(targets, asker=asker, max_volumes_per_node=2), targets, backends, reads


def holders(backends, name):
    return [i for i, b in enumerate(backends) if b.find_volume(name) is not None]


def home(targets, name) -> int:
    return int(placement.candidates(name, list(targets))[0].id[1:])


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_retry_while_the_holder_is_silent_never_makes_a_second_volume(mode):
    svc, targets, backends, reads = build(2)
    first = svc.create_volume("pvc-a", 64 * MiB, 0, RW, {})
    holder = home(targets, "pvc-a")
    assert holders(backends, "pvc-a") == [holder]
    reads[holder].mode = mode
    for _ in range(3):
        with pytest.raises(Unavailable, match=f"t{holder}"):
            svc.create_volume("pvc-a", 64 * MiB, 0, RW, {})
    assert holders(backends, "pvc-a") == [holder], "nothing created elsewhere"
    reads[holder].mode = ""
    reads[holder].released.set()
    assert svc.create_volume("pvc-a", 64 * MiB, 0, RW, {}).volume_id == first.volume_id


def test_a_placed_name_needs_only_its_home_but_a_new_name_needs_every_eligible_target():
    svc, targets, backends, reads = build(2)
    placed = svc.create_volume("pvc-b", 64 * MiB, 0, RW, {})
    other = 1 - home(targets, "pvc-b")
    reads[other].mode = "raise"
    assert svc.create_volume("pvc-b", 64 * MiB, 0, RW, {}).volume_id == placed.volume_id
    with pytest.raises(Unavailable, match=f"t{other}"):
        svc.create_volume("pvc-new", 64 * MiB, 0, RW, {})
    assert holders(backends, "pvc-new") == []


def test_volumes_placed_by_the_old_policy_are_still_found():
    svc, targets, backends, reads = build(7)
    last = int(placement.candidates("pvc-old", list(targets))[-1].id[1:])
    backends[last].create_volume("pvc-old", 64 * MiB, {})  # "most room" put it anywhere
    got = svc.create_volume("pvc-old", 64 * MiB, 0, RW, {})
    assert got.volume_id.startswith(f"t{last}/") and holders(backends, "pvc-old") == [last]
    reads[last].mode = "raise"
    with pytest.raises(Unavailable, match=f"t{last}"):
        svc.create_volume("pvc-old", 64 * MiB, 0, RW, {})


def test_a_full_first_candidate_is_passed_over_and_a_retry_still_finds_the_volume():
    svc, targets, backends, reads = build(3, pool_bytes=256 * MiB)
    order = [int(t.id[1:]) for t in placement.candidates("pvc-c", list(targets))]
    backends[order[0]].create_volume("filler", 512 * MiB, {})  # overcommit 2x: now full
    got = svc.create_volume("pvc-c", 64 * MiB, 0, RW, {})
    assert got.volume_id.startswith(f"t{order[1]}/")
    backends[order[0]].delete_volume(backends[order[0]].find_volume("filler").id)  # room again
    assert svc.create_volume("pvc-c", 64 * MiB, 0, RW, {}).volume_id == got.volume_id
    assert holders(backends, "pvc-c") == [order[1]]


def test_same_name_with_other_capabilities_or_topology_is_already_exists():
    svc, targets, backends, reads = build(1)
    svc.create_volume("pvc-d", 64 * MiB, 0, RW, {})
    with pytest.raises(AlreadyExists, match="volume_capabilities"):
        svc.create_volume("pvc-d", 64 * MiB, 0, [Capability("block", "MULTI_NODE_READER_ONLY")], {})
    assert "csi.sluice.dev/capabilities" not in svc.create_volume("pvc-d", 64 * MiB, 0, RW, {}).context
    with pytest.raises(AlreadyExists, match="accessibility"):
        svc.create_volume("pvc-d", 64 * MiB, 0, RW, {}, requisite=[{"csi.sluice.dev/zone": "elsewhere"}])


def test_lists_page_across_targets_and_never_drop_one():
    svc, targets, backends, reads = build(3)
    made = sorted(svc.create_volume(f"pvc-l{i}", 64 * MiB, 0, RW, {}).volume_id for i in range(7))
    for size in (1, 2, 3, 7, 0):
        seen, token = [], ""
        while True:
            page, token = svc.list_volumes(size, token)
            assert not size or len(page) <= size
            seen += [info.volume_id for info, _ in page]
            if not token:
                break
        assert seen == made
    with pytest.raises(StaleToken):
        svc.list_volumes(2, "not-a-token")
    reads[1].mode = "raise"
    with pytest.raises(Unavailable, match="t1"):
        svc.list_volumes(0, "")
    snaps = SnapshotService(targets, svc.inflight, svc.asker)
    with pytest.raises(Unavailable, match="t1"):
        snaps.list(0, "")


def test_snapshot_names_fail_closed():
    svc, targets, backends, reads = build(2)
    vol = svc.create_volume("pvc-s", 64 * MiB, 0, RW, {})
    snaps = SnapshotService(targets, svc.inflight, svc.asker)
    snap = snaps.create("snap-1", vol.volume_id, {})
    other = 1 - int(vol.volume_id[1])
    reads[other].mode = "raise"
    assert snaps.create("snap-1", vol.volume_id, {}).snapshot_id == snap.snapshot_id  # found at home
    with pytest.raises(Unavailable, match=f"t{other}"):
        snaps.create("snap-2", vol.volume_id, {})
    assert backends[int(vol.volume_id[1])].find_snapshot("snap-2") is None


def test_deletes_on_silent_and_unconfigured_targets():
    svc, targets, backends, reads = build(2)
    vol = svc.create_volume("pvc-del", 64 * MiB, 0, RW, {})
    holder = int(vol.volume_id[1])
    reads[holder].mode = "raise"
    with pytest.raises(Unavailable):
        svc.delete_volume(vol.volume_id)
    assert holders(backends, "pvc-del") == [holder]
    before = metrics.ORPHANED_DELETES.labels(target="gone")._value.get()
    svc.delete_volume("gone/" + vol.volume_id.split("/")[1])  # OK, logged as a possible leak
    assert metrics.ORPHANED_DELETES.labels(target="gone")._value.get() == before + 1  # and counted


def test_condition_comes_from_the_target():
    svc, targets, backends, reads = build(1)
    vol = svc.create_volume("pvc-cond", 64 * MiB, 0, RW, {})
    _, status = svc.get_volume(vol.volume_id)
    assert not status.abnormal and "not exported" in status.message
    vid = vol.volume_id.split("/")[1]
    backends[0].volumes[vid] = replace(backends[0].volumes[vid], condition="thin pool pool is 99% full")
    _, status = svc.get_volume(vol.volume_id)
    assert status.abnormal and "99% full" in status.message


def test_attach_limit_and_incompatible_publications():
    svc, targets, backends, reads = build(2)
    vols = [svc.create_volume(f"pvc-p{i}", 64 * MiB, 0, RW, {}).volume_id for i in range(3)]
    writer = RW[0]
    svc.publish(vols[0], NODES[0], writer, False)
    svc.publish(vols[1], NODES[0], writer, False)
    svc.publish(vols[1], NODES[0], writer, False)  # the same publication again
    with pytest.raises(NoSpace, match="max-volumes-per-node"):
        svc.publish(vols[2], NODES[0], writer, False)
    with pytest.raises(AlreadyExists, match="read-write"):
        svc.publish(vols[0], NODES[0], writer, True)
    with pytest.raises(FailedPrecondition):
        svc.publish(vols[0], NODES[1], writer, False)
    reader = Capability("mount", "MULTI_NODE_READER_ONLY")
    with pytest.raises(FailedPrecondition, match="read-only"):
        svc.publish(vols[0], NODES[1], reader, True)  # the other node writes
    svc.publish(vols[2], NODES[1], reader, True)
    svc.publish(vols[2], NODES[2], reader, False)  # a reader-only mode is read-only anyway
    with pytest.raises(FailedPrecondition):
        svc.publish(vols[2], NODES[3], Capability("mount", "SINGLE_NODE_WRITER"), False)


def test_probe_answers_while_every_target_hangs(tmp_path):
    backend = MemoryBackend()
    gate = threading.Event()
    backend.health = lambda: gate.wait(60) and Health(ready=False, problems=("was a black hole",))
    targets = Targets([Target(TargetConfig(id="t0"), backend)])
    server = start(DriverSettings(mode="controller", endpoint=tmp_path / "csi.sock"), targets)
    channel = grpc.insecure_channel(f"unix:{tmp_path / 'csi.sock'}")
    try:
        began = time.monotonic()
        ready = csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=20).ready.value
        assert ready and time.monotonic() - began < 20
    finally:
        gate.set()
        channel.close()
        server.stop(grace=None)


# --------------------------------------------------------------- name homes
def sealed(n: int, pool_bytes: int = 8 << 30):
    svc, targets, backends, reads = build(n, pool_bytes)
    assert svc.homes.seal() and svc.homes.sealed
    return svc, targets, backends, reads


def names_homed(targets, where: int, count: int, prefix: str) -> list[str]:
    everyone = list(targets)
    names = (f"{prefix}-{i}" for i in range(10_000))
    return [n for n in names if placement.home(n, everyone).id == f"t{where}"][:count]


@pytest.mark.parametrize("mode", ["raise", "hang"])
def test_sealed_a_silent_target_blocks_only_the_names_homed_there(mode):
    svc, targets, backends, reads = sealed(4)
    reads[2].mode = mode
    for name in names_homed(targets, 0, 2, "pvc-free") + names_homed(targets, 3, 2, "pvc-free"):
        svc.create_volume(name, 64 * MiB, 0, RW, {})  # homed on a live target: t2 is not asked
        assert len(holders(backends, name)) == 1
    blocked = names_homed(targets, 2, 2, "pvc-blocked")
    for name in blocked:
        for _ in range(20 if mode == "raise" else 2):
            with pytest.raises(Unavailable, match="t2"):
                svc.create_volume(name, 64 * MiB, 0, RW, {})
        assert holders(backends, name) == []
    reads[2].mode = ""
    reads[2].released.set()
    for name in blocked:
        assert svc.create_volume(name, 64 * MiB, 0, RW, {}).volume_id.startswith("t2/")
        assert holders(backends, name) == [2]


def test_sealed_a_full_home_points_to_the_next_candidate_and_retries_follow_it():
    svc, targets, backends, reads = sealed(3, pool_bytes=256 * MiB)
    name = names_homed(targets, 0, 1, "pvc-full")[0]
    order = [int(t.id[1:]) for t in placement.candidates(name, list(targets))]
    backends[0].create_volume("filler", 512 * MiB, {})  # overcommit 2x: the home is full
    got = svc.create_volume(name, 64 * MiB, 0, RW, {})
    assert got.volume_id.startswith(f"t{order[1]}/")
    assert backends[0].find_name(name) == (None, (f"t{order[1]}",)), "the pointer is on the home"
    backends[0].delete_volume(backends[0].find_volume("filler").id)  # room at home again
    unrelated = [i for i in range(3) if i not in (0, order[1])][0]
    reads[unrelated].mode = "raise"  # neither the home nor the holder: not asked
    assert svc.create_volume(name, 64 * MiB, 0, RW, {}).volume_id == got.volume_id
    reads[unrelated].mode = ""
    reads[order[1]].mode = "raise"
    with pytest.raises(Unavailable, match=f"t{order[1]}"):
        svc.create_volume(name, 64 * MiB, 0, RW, {})
    assert holders(backends, name) == [order[1]]


def test_sealed_a_silent_home_never_leads_to_a_create_elsewhere():
    svc, targets, backends, reads = sealed(3)
    name = names_homed(targets, 1, 1, "pvc-home-down")[0]
    reads[1].mode = "raise"
    for _ in range(5):
        with pytest.raises(Unavailable, match="t1"):
            svc.create_volume(name, 64 * MiB, 0, RW, {}, requisite=[{"csi.sluice.dev/zone": "z"}])
    assert holders(backends, name) == []


def test_the_sweep_points_to_volumes_made_before_it_and_needs_every_target():
    svc, targets, backends, reads = build(5)
    name = names_homed(targets, 0, 1, "pvc-legacy")[0]
    backends[4].create_volume(name, 64 * MiB, {})  # placed by the old "most room" policy
    reads[3].mode = "raise"
    assert not svc.homes.seal() and not svc.homes.sealed, "a silent target leaves the homes unsealed"
    with pytest.raises(Unavailable, match="t3"):
        svc.create_volume("pvc-new", 64 * MiB, 0, RW, {})  # unsealed: a new name asks everyone
    reads[3].mode = ""
    assert svc.homes.seal()
    assert backends[0].find_name(name) == (None, ("t4",))
    reads[3].mode = "raise"  # not the home, not the holder
    assert svc.create_volume(name, 64 * MiB, 0, RW, {}).volume_id.startswith("t4/")
    assert holders(backends, name) == [4]


def test_a_changed_target_set_is_not_trusted_until_swept_again():
    svc, targets, backends, reads = sealed(3)
    made = {n: svc.create_volume(n, 64 * MiB, 0, RW, {}).volume_id for n in (f"pvc-m{i}" for i in range(12))}
    grown_backend = MemoryBackend()
    grown = Targets([*targets, Target(TargetConfig(id="t9", topology={"csi.sluice.dev/zone": "z"}), grown_backend)])
    moved = [n for n in made if placement.home(n, list(grown)).id == "t9"]
    assert moved, "the new target is home to some existing names"
    svc2 = ControllerService(grown, asker=svc.asker)
    assert not svc2.homes.sealed
    assert svc2.homes.seal()
    assert all(grown_backend.find_name(n) == (None, (made[n].split("/")[0],)) for n in moved)
    for n, volume_id in made.items():
        assert svc2.create_volume(n, 64 * MiB, 0, RW, {}).volume_id == volume_id
    assert all(grown_backend.find_volume(n) is None for n in made)


def test_sealed_lookups_cost_one_round_trip_however_many_targets():
    svc, targets, backends, reads = sealed(40)
    calls = []
    for i, r in enumerate(reads):
        real = r.backend
        r.backend = _Counting(real, calls, i)
    svc.create_volume("pvc-count", 64 * MiB, 0, RW, {})
    asked = {i for i, _ in calls}
    assert len(asked) <= 2, f"a new name asked {sorted(asked)}"  # its home (+ room on the first candidate)
    calls.clear()
    svc.create_volume("pvc-count", 64 * MiB, 0, RW, {})
    assert len(calls) == 1, "a retry asks the home once"


class _Counting:
    def __init__(self, backend, calls, index):
        self.backend, self.calls, self.index = backend, calls, index

    def __getattr__(self, attr):
        real = getattr(self.backend, attr)
        if not callable(real):
            return real

        def call(*args, **kwargs):
            self.calls.append((self.index, attr))
            return real(*args, **kwargs)
        return call


def test_parallel_publishes_to_one_node_wait_their_turn_and_the_limit_holds():
    """Pods landing on one node at once: publishes of different volumes are never ABORTED
    against each other, and the node's attach limit holds exactly under the race."""
    svc, targets, backends, reads = build(2)
    svc.max_volumes_per_node = 5
    vols = [svc.create_volume(f"pvc-race{i}", 64 * MiB, 0, RW, {}).volume_id for i in range(8)]
    for backend in backends:  # a slow add_host: the publishes overlap there
        real = backend.add_host
        backend.add_host = lambda *a, real=real, **kw: (time.sleep(0.05), real(*a, **kw))[1]
    start_line = threading.Barrier(len(vols))

    def publish(vid):
        start_line.wait(5)
        try:
            return svc.publish(vid, NODES[0], RW[0], False)
        except NoSpace as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(vols)) as pool:
        outcomes = list(pool.map(publish, vols))  # any other error (Busy) fails the test here
    refused = [o for o in outcomes if isinstance(o, NoSpace)]
    assert len(refused) == 3 and all("max-volumes-per-node" in str(o) for o in refused)
    assert sum(NODES[0] in x.hosts for b in backends for x in b.list_exports()) == 5
    assert len(svc.attaching) == 0


def test_a_second_publish_of_the_same_volume_in_flight_is_still_busy():
    svc, targets, backends, reads = build(1)
    vid = svc.create_volume("pvc-twice", 64 * MiB, 0, RW, {}).volume_id
    entered, release = threading.Event(), threading.Event()
    real = backends[0].add_host
    backends[0].add_host = lambda *a, **kw: (entered.set(), release.wait(5), real(*a, **kw))[2]
    worker = threading.Thread(target=svc.publish, args=(vid, NODES[0], RW[0], False))
    worker.start()
    entered.wait(5)
    with pytest.raises(Busy):
        svc.publish(vid, NODES[0], RW[0], False)
    release.set()
    worker.join()
