"""The Backend contract, written once and run against every implementation:

- tests/unit/test_memory_backend.py — the in-memory fake, on the host;
- tests/unit/test_agent_grpc.py     — the same fake behind the agent's gRPC service;
- tests/lab/test_kernel_backend.py  — KernelBackend on real LVM and nvmet in the lab;
- tests/unit/test_spdk_backend.py   — the SPDK backend against the fake nvmf_tgt.

GroupSnapshotContract (groups of several volumes) is for the backends that take them.

A subclass provides a `backend` fixture (a fresh, empty backend).
"""

from __future__ import annotations

import threading

import pytest

from nvme_target import naming
from nvme_target.model import QoS, Source
from sluice_common.errors import AlreadyExists, InUse, InvalidArgument, NoSpace, NotFound, OutOfRange

MiB = 1 << 20
HOST_A = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"
HOST_B = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002"
UNKNOWN_VOLUME = "v-" + "0" * 32
UNKNOWN_SNAPSHOT = "s-" + "0" * 32
UNKNOWN_GROUP = "g-" + "0" * 32


class BackendContract:
    # --------------------------------------------------------------------- qos
    def test_limits_are_kept_by_the_target_and_survive_other_changes(self, backend):
        vol = backend.create_volume("pvc-q", 32 * MiB, {"qos.readIOPS": "500"})
        assert vol.qos is None and vol.limits == QoS()
        limited = backend.set_qos(vol.id, QoS(read_iops=500, write_bps=10 * MiB))
        assert limited.qos == QoS(read_iops=500, write_bps=10 * MiB)
        assert backend.get_volume(vol.id).qos == limited.qos
        assert backend.set_qos(vol.id, limited.qos) == limited  # idempotent
        grown = backend.expand_volume(vol.id, 64 * MiB)
        assert grown.qos == limited.qos and backend.get_volume(vol.id).qos == limited.qos
        assert backend.create_volume("pvc-q", 64 * MiB, {"qos.readIOPS": "500"}).qos == limited.qos
        assert backend.set_qos(vol.id, QoS()).qos == QoS()
        assert backend.get_volume(vol.id).qos == QoS()

    def test_limits_of_a_missing_volume_are_not_found(self, backend):
        with pytest.raises(NotFound):
            backend.set_qos(UNKNOWN_VOLUME, QoS(read_iops=1))

    def test_watch_sends_the_volumes_now_and_each_limit_change(self, backend):
        a = backend.create_volume("pvc-wa", 32 * MiB)
        b = backend.create_volume("pvc-wb", 32 * MiB)
        stop = threading.Event()
        seen = []
        got = threading.Semaphore(0)

        def consume():
            for vol in backend.watch_volumes([a.id, b.id, UNKNOWN_VOLUME], stop, tick=0.1):
                seen.append((vol.id, vol.qos))
                got.release()

        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        try:
            for _ in range(2):
                assert got.acquire(timeout=10)
            assert sorted(seen) == sorted([(a.id, None), (b.id, None)])
            backend.set_qos(b.id, QoS(write_iops=7))
            assert got.acquire(timeout=10)
            assert seen[-1] == (b.id, QoS(write_iops=7))
            backend.set_qos(b.id, QoS(write_iops=7))  # no change: nothing sent
            backend.set_qos(a.id, QoS(read_bps=MiB))
            assert got.acquire(timeout=10)
            assert seen[2:] == [(b.id, QoS(write_iops=7)), (a.id, QoS(read_bps=MiB))]
        finally:
            stop.set()
            worker.join(timeout=10)
        assert not worker.is_alive()

    # ----------------------------------------------------------------- volumes
    def test_create_get_find_list(self, backend):
        vol = backend.create_volume("pvc-a", 64 * MiB, {"qos.readIOPS": "500"})
        assert vol.name == "pvc-a" and vol.size_bytes >= 64 * MiB
        assert vol.metadata == {"qos.readIOPS": "500"} and vol.source is None
        assert backend.get_volume(vol.id) == vol
        assert backend.find_volume("pvc-a") == vol
        assert backend.find_volume("pvc-missing") is None
        assert [v.id for v in backend.list_volumes()] == [vol.id]

    def test_size_is_rounded_up_to_the_allocation_unit(self, backend):
        unit = backend.capacity().allocation_unit_bytes
        assert unit >= 512
        vol = backend.create_volume("pvc-odd", 10 * MiB + 1)
        assert vol.size_bytes > 10 * MiB and vol.size_bytes % unit == 0
        assert vol.size_bytes - (10 * MiB + 1) < unit

    def test_create_is_idempotent(self, backend):
        first = backend.create_volume("pvc-b", 32 * MiB, {"k": "v"})
        again = backend.create_volume("pvc-b", 32 * MiB, {"k": "v"})
        assert again == first
        assert len(backend.list_volumes()) == 1

    @pytest.mark.parametrize("change", [{"size_bytes": 128 * MiB}, {"metadata": {"k": "other"}}])
    def test_incompatible_create_is_already_exists(self, backend, change):
        backend.create_volume("pvc-c", 32 * MiB, {"k": "v"})
        args = {"size_bytes": 32 * MiB, "metadata": {"k": "v"}} | change
        with pytest.raises(AlreadyExists):
            backend.create_volume("pvc-c", **args)

    @pytest.mark.parametrize("size", [0, -1, 1 << 60])
    def test_bad_sizes_create_nothing(self, backend, size):
        with pytest.raises(InvalidArgument, match="size_bytes"):
            backend.create_volume("pvc-bad-size", size)
        assert backend.list_volumes() == []

    @pytest.mark.parametrize("name", ["", "x" * 129, "é" * 65, "bad\x00name", "bad\x1fname"])
    def test_bad_names_create_nothing(self, backend, name):
        with pytest.raises(InvalidArgument, match="name"):
            backend.create_volume(name, 8 * MiB)
        assert backend.list_volumes() == []

    def test_unicode_name_of_128_bytes(self, backend):
        name = "é" * 64  # 128 bytes of UTF-8
        vol = backend.create_volume(name, 8 * MiB)
        assert backend.find_volume(name) == vol

    def test_unknown_ids_are_not_found(self, backend):
        for bad in (UNKNOWN_VOLUME, "nonsense", "../../etc"):
            with pytest.raises(NotFound):
                backend.get_volume(bad)
        with pytest.raises(NotFound):
            backend.get_snapshot(UNKNOWN_SNAPSHOT)

    def test_delete_is_idempotent(self, backend):
        vol = backend.create_volume("pvc-d", 8 * MiB)
        backend.delete_volume(vol.id)
        backend.delete_volume(vol.id)
        backend.delete_volume(UNKNOWN_VOLUME)
        backend.delete_volume("nonsense")
        assert backend.list_volumes() == []

    def test_expand_grows_only(self, backend):
        vol = backend.create_volume("pvc-e", 32 * MiB)
        grown = backend.expand_volume(vol.id, 96 * MiB)
        assert grown.size_bytes >= 96 * MiB
        assert backend.get_volume(vol.id).size_bytes == grown.size_bytes
        assert backend.expand_volume(vol.id, grown.size_bytes) == grown
        with pytest.raises(InvalidArgument, match="only grow"):
            backend.expand_volume(vol.id, 16 * MiB)
        with pytest.raises(NotFound):
            backend.expand_volume(UNKNOWN_VOLUME, 96 * MiB)

    # --------------------------------------------------------------- snapshots
    def test_snapshot_lifecycle(self, backend):
        vol = backend.create_volume("pvc-f", 32 * MiB)
        snap = backend.create_snapshot("snap-f", vol.id)
        assert snap.source_volume_id == vol.id and snap.size_bytes == vol.size_bytes and snap.ready
        assert backend.create_snapshot("snap-f", vol.id) == snap
        assert backend.get_snapshot(snap.id) == snap
        assert backend.find_snapshot("snap-f") == snap
        assert backend.list_snapshots() == [snap]
        assert backend.list_snapshots(vol.id) == [snap]
        assert backend.list_snapshots(UNKNOWN_VOLUME) == []
        backend.delete_snapshot(snap.id)
        backend.delete_snapshot(snap.id)
        assert backend.list_snapshots() == []

    def test_snapshot_name_reused_for_another_source(self, backend):
        a = backend.create_volume("pvc-g1", 8 * MiB)
        b = backend.create_volume("pvc-g2", 8 * MiB)
        backend.create_snapshot("snap-g", a.id)
        with pytest.raises(AlreadyExists):
            backend.create_snapshot("snap-g", b.id)

    def test_snapshot_of_unknown_volume(self, backend):
        with pytest.raises(NotFound):
            backend.create_snapshot("snap-h", UNKNOWN_VOLUME)
        assert backend.list_snapshots() == []

    # ------------------------------------------------------------------ clones
    def test_clone_from_snapshot_and_from_volume(self, backend):
        vol = backend.create_volume("pvc-i", 32 * MiB)
        snap = backend.create_snapshot("snap-i", vol.id)
        c1 = backend.create_volume("pvc-i-c1", 64 * MiB, source=Source("snapshot", snap.id))
        c2 = backend.create_volume("pvc-i-c2", 32 * MiB, source=Source("volume", vol.id))
        assert c1.source == Source("snapshot", snap.id) and c1.size_bytes >= 64 * MiB
        assert c2.source == Source("volume", vol.id)
        assert backend.get_volume(c1.id) == c1
        assert backend.create_volume("pvc-i-c2", 32 * MiB, source=Source("volume", vol.id)) == c2
        with pytest.raises(AlreadyExists):
            backend.create_volume("pvc-i-c2", 32 * MiB)  # same name, no source

    def test_clone_smaller_than_source_is_out_of_range(self, backend):
        vol = backend.create_volume("pvc-j", 64 * MiB)
        with pytest.raises(OutOfRange):
            backend.create_volume("pvc-j-c", 16 * MiB, source=Source("volume", vol.id))
        assert [v.id for v in backend.list_volumes()] == [vol.id]

    def test_clone_from_unknown_source(self, backend):
        for source in (Source("snapshot", UNKNOWN_SNAPSHOT), Source("volume", UNKNOWN_VOLUME)):
            with pytest.raises(NotFound):
                backend.create_volume("pvc-k", 8 * MiB, source=source)
        assert backend.list_volumes() == []

    def test_deleting_a_snapshot_keeps_its_clones(self, backend):
        vol = backend.create_volume("pvc-l", 16 * MiB)
        snap = backend.create_snapshot("snap-l", vol.id)
        clone = backend.create_volume("pvc-l-c", 16 * MiB, source=Source("snapshot", snap.id))
        backend.delete_snapshot(snap.id)
        assert backend.get_volume(clone.id) == clone

    # ---------------------------------------------------------------- capacity
    def test_capacity_tracks_provisioning(self, backend):
        before = backend.capacity()
        vol = backend.create_volume("pvc-m", 256 * MiB)
        after = backend.capacity()
        assert after.provisioned_bytes == before.provisioned_bytes + vol.size_bytes
        assert after.available_bytes == before.available_bytes - vol.size_bytes
        assert after.total_bytes == before.total_bytes > 0

    def test_create_past_overcommit_is_no_space(self, backend):
        available = backend.capacity().available_bytes
        with pytest.raises(NoSpace):
            backend.create_volume("pvc-n", available + 64 * MiB)
        assert backend.list_volumes() == []
        vol = backend.create_volume("pvc-n2", 8 * MiB)
        with pytest.raises(NoSpace):
            backend.expand_volume(vol.id, available + 64 * MiB)

    # ----------------------------------------------------------------- exports
    def test_export_hosts_and_unexport(self, backend):
        vol = backend.create_volume("pvc-o", 16 * MiB)
        exp = backend.export_volume(vol.id, [HOST_A])
        assert exp.volume_id == vol.id and exp.hosts == {HOST_A}
        assert exp.subsystem_nqn.startswith("nqn.") and len(exp.serial) <= 20
        assert exp.portals == backend.portals()
        assert backend.export_volume(vol.id, [HOST_A]) == exp
        assert backend.add_host(vol.id, HOST_B).hosts == {HOST_A, HOST_B}
        assert backend.add_host(vol.id, HOST_B).hosts == {HOST_A, HOST_B}
        assert backend.remove_host(vol.id, HOST_A).hosts == {HOST_B}
        assert backend.remove_host(vol.id, HOST_A).hosts == {HOST_B}
        assert backend.get_export(vol.id).hosts == {HOST_B}
        assert [x.volume_id for x in backend.list_exports()] == [vol.id]
        backend.unexport_volume(vol.id)
        backend.unexport_volume(vol.id)
        assert backend.get_export(vol.id) is None and backend.list_exports() == []
        assert backend.remove_host(vol.id, HOST_B) is None

    def test_read_only_publications_are_remembered(self, backend):
        vol = backend.create_volume("pvc-ro", 16 * MiB)
        assert backend.add_host(vol.id, HOST_A, readonly=True).readonly_hosts == {HOST_A}
        exp = backend.add_host(vol.id, HOST_B)
        assert exp.hosts == {HOST_A, HOST_B} and exp.readonly_hosts == {HOST_A}
        assert backend.get_export(vol.id).readonly_hosts == {HOST_A}
        assert backend.add_host(vol.id, HOST_A).readonly_hosts == frozenset()  # the flag is replaced
        backend.add_host(vol.id, HOST_B, readonly=True)
        assert backend.remove_host(vol.id, HOST_B).readonly_hosts == frozenset()
        backend.add_host(vol.id, HOST_A, readonly=True)
        backend.unexport_volume(vol.id)
        assert backend.add_host(vol.id, HOST_A).readonly_hosts == frozenset()  # nothing stale
        backend.unexport_volume(vol.id)

    def test_lists_page_by_id(self, backend):
        vols = [backend.create_volume(f"pvc-page-{i}", 16 * MiB) for i in range(5)]
        ids = sorted(v.id for v in vols)
        assert [v.id for v in backend.list_volumes()] == ids
        assert [v.id for v in backend.list_volumes(limit=2)] == ids[:2]
        assert [v.id for v in backend.list_volumes(start_after=ids[1], limit=2)] == ids[2:4]
        assert [v.id for v in backend.list_volumes(start_after=ids[-1])] == []
        backend.export_volume(ids[0], [HOST_A])
        backend.export_volume(ids[3], [HOST_B])
        assert [x.volume_id for x in backend.list_exports()] == [ids[0], ids[3]]
        assert [x.volume_id for x in backend.list_exports([ids[3], ids[4]])] == [ids[3]]
        assert backend.list_exports([]) == []
        for vol_id in ids:
            backend.delete_volume(vol_id, unexport=True)

    def test_export_identity_is_stable(self, backend):
        vol = backend.create_volume("pvc-p", 16 * MiB)
        first = backend.export_volume(vol.id, [])
        backend.unexport_volume(vol.id)
        second = backend.export_volume(vol.id, [])
        assert (first.subsystem_nqn, first.namespace_uuid, first.namespace_nguid, first.serial) == \
               (second.subsystem_nqn, second.namespace_uuid, second.namespace_nguid, second.serial)
        backend.unexport_volume(vol.id)

    def test_exported_volume_is_in_use(self, backend):
        vol = backend.create_volume("pvc-q", 16 * MiB)
        backend.export_volume(vol.id, [HOST_A])
        with pytest.raises(InUse):
            backend.delete_volume(vol.id)
        assert backend.get_volume(vol.id) == vol
        backend.delete_volume(vol.id, unexport=True)
        assert backend.list_volumes() == [] and backend.list_exports() == []

    def test_export_errors(self, backend):
        with pytest.raises(NotFound):
            backend.export_volume(UNKNOWN_VOLUME, [HOST_A])
        vol = backend.create_volume("pvc-r", 16 * MiB)
        for bad in ("not-an-nqn", "nqn.bad host", "nqn." + "x" * 300):
            with pytest.raises(InvalidArgument):
                backend.export_volume(vol.id, [bad])
            with pytest.raises(InvalidArgument):
                backend.add_host(vol.id, bad)
        assert backend.get_export(vol.id) is None

    def test_name_pointers_are_kept_and_only_added_to(self, backend):
        assert backend.find_name("pvc-away") == (None, ())
        backend.point_names({"pvc-away": "target-b", "pvc-other": "target-c"})
        backend.point_names({"pvc-away": "target-b"})  # again: no change
        backend.point_names({"pvc-away": "target-d"})
        assert backend.find_name("pvc-away") == (None, ("target-b", "target-d"))
        vol = backend.create_volume("pvc-home", 32 * MiB)
        assert backend.find_name("pvc-home") == (vol, ())
        backend.resync()
        assert backend.find_volume("pvc-home") == vol

    def test_health(self, backend):
        assert backend.health().ready

    # --------------------------------------------------------- group snapshots
    def test_group_of_one_volume(self, backend):
        vol = backend.create_volume("pvc-g1", 16 * MiB)
        group = backend.create_group_snapshot("vgs-one", [vol.id])
        assert group.ready and group.name == "vgs-one" and group.source_volume_ids == (vol.id,)
        (member,) = group.snapshots
        assert member.group_id == group.id and backend.get_snapshot(member.id) == member
        assert backend.create_group_snapshot("vgs-one", [vol.id]) == group  # a retry finds it
        assert backend.get_group_snapshot(group.id) == group
        backend.delete_group_snapshot(group.id)
        backend.delete_group_snapshot(group.id)  # missing is not an error
        with pytest.raises(NotFound):
            backend.get_group_snapshot(group.id)
        assert backend.list_snapshots() == []

    def test_group_snapshot_bad_input(self, backend):
        vol = backend.create_volume("pvc-g2", 16 * MiB)
        with pytest.raises(InvalidArgument, match="source_volume_ids"):
            backend.create_group_snapshot("vgs-bad", [])
        with pytest.raises(InvalidArgument, match="twice"):
            backend.create_group_snapshot("vgs-bad", [vol.id, vol.id])
        with pytest.raises(NotFound):
            backend.create_group_snapshot("vgs-bad", [UNKNOWN_VOLUME])
        with pytest.raises(InvalidArgument, match="name"):
            backend.create_group_snapshot("", [vol.id])
        with pytest.raises(NotFound):
            backend.get_group_snapshot(UNKNOWN_GROUP)
        with pytest.raises(NotFound):
            backend.get_group_snapshot("not-a-group-id")
        backend.delete_group_snapshot(UNKNOWN_GROUP)
        backend.delete_group_snapshot("not-a-group-id")
        assert backend.list_snapshots() == []


class GroupSnapshotContract:
    """Group snapshots of several volumes, for backends that can fence a set at once
    (not SPDK v26.05: see nvme_target/spdk/groups.py)."""

    def test_group_members_are_ordinary_snapshots(self, backend):
        vols = [backend.create_volume(f"pvc-gm{i}", 16 * MiB) for i in range(3)]
        ids = [v.id for v in reversed(vols)]
        group = backend.create_group_snapshot("vgs-many", ids)
        assert group.ready and group.source_volume_ids == tuple(sorted(ids))
        assert {s.group_id for s in group.snapshots} == {group.id}
        assert backend.create_group_snapshot("vgs-many", sorted(ids)) == group  # order does not matter
        for member in group.snapshots:
            assert backend.get_snapshot(member.id) == member
            assert backend.list_snapshots(member.source_volume_id) == [member]
        clone = backend.create_volume("pvc-from-member", 16 * MiB,
                                      source=Source("snapshot", group.snapshots[0].id))
        assert clone.source == Source("snapshot", group.snapshots[0].id)
        with pytest.raises(AlreadyExists):
            backend.create_group_snapshot("vgs-many", ids[:2])
        backend.delete_group_snapshot(group.id)
        assert backend.list_snapshots() == []
        with pytest.raises(NotFound):
            backend.get_group_snapshot(group.id)
        assert backend.get_volume(clone.id) == clone  # a clone outlives its source snapshot

    def test_failed_group_create_leaves_nothing(self, backend):
        vol = backend.create_volume("pvc-gf", 16 * MiB)
        with pytest.raises(NotFound):
            backend.create_group_snapshot("vgs-half", [vol.id, UNKNOWN_VOLUME])
        assert backend.list_snapshots() == []
        with pytest.raises(NotFound):
            backend.get_group_snapshot(group_id_of("vgs-half"))


def group_id_of(name: str) -> str:
    return naming.group_snapshot_id(name)
