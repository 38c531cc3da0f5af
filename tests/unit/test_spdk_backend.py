"""The SPDK backend against the fake v26.05 target (tests/fakes/spdk_target.py, itself
checked line by line against the real target's transcript): the whole Backend contract,
then what is SPDK's own: error mapping, guards, QoS mapping and replay after a restart.

With SLUICE_SPDK_NVMF_TGT=/path/to/nvmf_tgt (or SLUICE_SPDK_SOCKET=<rpc socket>) the same
tests run against a real target (tests/fakes/spdk_real.py)."""

from __future__ import annotations


import pytest

from nvme_target.model import Portal, QoS, Source
from nvme_target.spdk import errors
from nvme_target.spdk.backend import SpdkBackend, SpdkConfig
from nvme_target.spdk.qos import spdk_limits
from nvme_target.spdk.rpc import SpdkRpc
from sluice_common.errors import (
    AlreadyExists, BackendFailure, FailedPrecondition, InUse, InvalidArgument, NoSpace, NotFound, Unavailable,
)
from tests.contract.auth_contract import AuthContract
from tests.contract.backend_contract import HOST_A, HOST_B, MiB, BackendContract
from tests.fakes import spdk_real
from tests.fakes.spdk_real import free_port, make_server
from tests.fakes.spdk_target import RpcError

GiB = 1 << 30
PORTAL = Portal("127.0.0.1", free_port())


@pytest.fixture
def server(tmp_path):
    srv = make_server(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def backends():
    made: list[SpdkBackend] = []
    yield made
    for backend in made:
        backend.close()


def make_backend(server, tmp_path, backends: list | None = None, **options) -> SpdkBackend:
    config = SpdkConfig(socket=server.path, base_bdev="base0", aio_file=server.image,
                        **{"watch_interval": 0.2, **options})
    backend = SpdkBackend(config, (PORTAL,), tmp_path / "state", overcommit_ratio=2.0)
    if backends is not None:
        backends.append(backend)
    backend.restore()
    return backend


@pytest.fixture
def backend(server, tmp_path, backends):
    return make_backend(server, tmp_path, backends)


def exists(server, bdev: str) -> bool:
    try:
        return bool(server.target.bdev_get_bdevs(name=bdev))
    except RpcError:
        return False


class TestSpdkBackendContract(BackendContract, AuthContract):
    pass


def fake(server):
    """The target's RPC methods: the fake itself, or a raw view of the real one."""
    return server.target


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("method, code, message, cls", [
    ("bdev_lvol_create", -17, "File exists", AlreadyExists),
    ("bdev_lvol_snapshot", -32602, "File exists", AlreadyExists),
    ("bdev_lvol_create", -19, "No such device", NotFound),
    ("bdev_lvol_create", -32602, "No space left on device", NoSpace),
    ("bdev_lvol_resize", -32602, "Operation not permitted", FailedPrecondition),
    ("bdev_lvol_delete", -32603, "Operation not permitted", InUse),
    ("bdev_lvol_clone", -32602, "Invalid argument", InvalidArgument),
    ("nvmf_subsystem_add_host", -32603, "Internal error", AlreadyExists),
    ("nvmf_subsystem_remove_host", -32603, "Internal error", NotFound),
    ("nvmf_subsystem_add_ns", -32602, "Invalid parameters", InvalidArgument),
    ("bdev_get_iostat", -32603, "spdk_json_decode_object failed", BackendFailure),
    ("nvmf_get_transports", -12345, "Something new", BackendFailure),
])
def test_errors_map_on_method_code_and_message_and_keep_the_code(method, code, message, cls):
    err = errors.translate(method, code, message)
    assert type(err) is cls
    assert err.details == {"spdk_method": method, "spdk_code": code, "spdk_message": message}
    assert message in str(err) and str(code) in str(err)


def test_a_target_that_is_not_there_is_unavailable(tmp_path):
    rpc = SpdkRpc(tmp_path / "nothing.sock", timeout=2)
    with pytest.raises(Unavailable, match="nothing.sock"):
        rpc.call("spdk_get_version")


def test_errors_from_the_target_arrive_typed_through_the_official_client(server):
    rpc = SpdkRpc(server.path)
    with pytest.raises(NotFound) as info:
        rpc.call("bdev_get_bdevs", name="nope")
    assert info.value.details["spdk_code"] == -19


# ------------------------------------------------------------------ guards
def test_an_exported_volume_is_not_deleted_behind_its_host(backend, server):
    vol = backend.create_volume("pvc-g", 64 * MiB)
    backend.export_volume(vol.id, [HOST_A])
    with pytest.raises(InUse):
        backend.delete_volume(vol.id)
    assert fake(server).bdev_get_bdevs(name=f"sluice/{vol.id}")  # SPDK alone would have deleted it
    backend.delete_volume(vol.id, unexport=True)
    assert backend.list_exports() == [] and backend.list_volumes() == []


def test_volumes_never_shrink_though_spdk_would(backend):
    vol = backend.create_volume("pvc-s", 64 * MiB)
    with pytest.raises(InvalidArgument, match="only grow"):
        backend.expand_volume(vol.id, 32 * MiB)
    assert backend.get_volume(vol.id).size_bytes == vol.size_bytes


def test_a_namespace_uuid_in_use_elsewhere_is_refused(backend, server):
    a = backend.create_volume("pvc-u1", 64 * MiB)
    b = backend.create_volume("pvc-u2", 64 * MiB)
    export_a = backend.export_volume(a.id)
    rpc = SpdkRpc(server.path)  # someone else reuses a's namespace UUID for b's bdev
    rpc.call("nvmf_create_subsystem", nqn="nqn.2016-06.io.spdk:intruder", allow_any_host=False)
    rpc.call("nvmf_subsystem_add_ns", nqn="nqn.2016-06.io.spdk:intruder",
             namespace={"bdev_name": f"sluice/{b.id}", "uuid": "6c1f6c4e-0000-4000-8000-000000000001"})
    backend.unexport_volume(a.id)
    rpc.call("nvmf_subsystem_remove_ns", nqn="nqn.2016-06.io.spdk:intruder", nsid=1)
    rpc.call("nvmf_subsystem_add_ns", nqn="nqn.2016-06.io.spdk:intruder",
             namespace={"bdev_name": f"sluice/{b.id}", "uuid": export_a.namespace_uuid})
    with pytest.raises(FailedPrecondition, match=export_a.namespace_uuid):
        backend.export_volume(a.id)


def test_the_lvstore_is_not_deleted_while_it_holds_volumes(backend, server):
    vol = backend.create_volume("pvc-l", 64 * MiB)
    with pytest.raises(InUse, match="lvstore"):
        backend.delete_lvstore()
    assert fake(server).bdev_lvol_get_lvstores(lvs_name="sluice")
    backend.delete_volume(vol.id)
    backend.delete_lvstore()
    assert fake(server).bdev_lvol_get_lvstores() == []


def test_a_snapshot_spdk_cannot_delete_yet_is_retired_then_collected(backend, server):
    vol = backend.create_volume("pvc-r", 64 * MiB)
    snap = backend.create_snapshot("snap-r", vol.id)
    clone = backend.create_volume("pvc-r-clone", 64 * MiB, source=Source("snapshot", snap.id))
    backend.delete_snapshot(snap.id)  # 2 clones (the volume and the restore): SPDK says no
    assert backend.list_snapshots() == [] and backend.find_snapshot("snap-r") is None
    assert fake(server).bdev_get_bdevs(name=f"sluice/{snap.id}"), "kept for its clones"
    backend.delete_volume(clone.id)
    assert not exists(server, f"sluice/{snap.id}"), "collected when one clone is left"
    assert backend.get_volume(vol.id) == vol


def test_clone_of_a_volume_goes_through_an_internal_snapshot_that_is_cleaned_up(backend, server):
    vol = backend.create_volume("pvc-o", 64 * MiB)
    clone = backend.create_volume("pvc-o-c", 128 * MiB, source=Source("volume", vol.id))
    assert clone.size_bytes == 128 * MiB and backend.list_snapshots() == []
    backend.delete_volume(clone.id)
    backend.delete_volume(vol.id)
    assert fake(server).bdev_lvol_get_lvols(lvs_name="sluice") == []


# --------------------------------------------------------------------- qos
@pytest.mark.parametrize("qos, limits", [
    (QoS(), {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0, "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0}),
    (QoS(read_iops=700, write_iops=800), {"rw_ios_per_sec": 2000, "rw_mbytes_per_sec": 0,
                                          "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 0}),
    (QoS(read_iops=700), {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0, "r_mbytes_per_sec": 0,
                          "w_mbytes_per_sec": 0}),
    (QoS(read_bps=10 * MiB, write_bps=5 * MiB + 1), {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
                                                     "r_mbytes_per_sec": 10, "w_mbytes_per_sec": 6}),
])
def test_the_four_knobs_map_to_a_target_ceiling_that_never_undercuts_them(qos, limits):
    assert spdk_limits(qos) == limits


def test_limits_are_applied_on_the_target_and_reported_as_spdk_rounds_them(backend):
    vol = backend.create_volume("pvc-q", 64 * MiB)
    backend.export_volume(vol.id, [HOST_A])
    backend.set_qos(vol.id, QoS(read_iops=700, write_iops=800, write_bps=5 * MiB))
    assert backend.target_limits(vol.id) == {"rw_ios_per_sec": 2000, "rw_mbytes_per_sec": 0,
                                             "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 5}
    backend.set_qos(vol.id, QoS())
    assert set(backend.target_limits(vol.id).values()) == {0}


def test_a_dynamic_ceiling_lowers_the_target_limits_and_its_release_restores_the_static_ones(backend):
    vol = backend.create_volume("pvc-c", 64 * MiB)
    backend.export_volume(vol.id, [HOST_A])
    backend.set_qos(vol.id, QoS(write_bps=8 * MiB, qos_class="bulk"))
    backend.apply_ceiling(vol.id, QoS(read_bps=3 * MiB, write_bps=3 * MiB))
    assert backend.target_limits(vol.id)["w_mbytes_per_sec"] == 3
    assert backend.target_limits(vol.id)["r_mbytes_per_sec"] == 3
    assert backend.get_volume(vol.id).qos == QoS(write_bps=8 * MiB, qos_class="bulk")  # stored limits untouched
    backend.apply_ceiling(vol.id, QoS(read_bps=50 * MiB, write_bps=50 * MiB))
    assert backend.target_limits(vol.id)["w_mbytes_per_sec"] == 8  # never above the static cap
    backend.apply_ceiling(vol.id, None)
    assert backend.target_limits(vol.id) == {"rw_ios_per_sec": 0, "rw_mbytes_per_sec": 0,
                                             "r_mbytes_per_sec": 0, "w_mbytes_per_sec": 8}


# ------------------------------------------------------------------ restart
def test_a_restarted_target_gets_exports_and_limits_back(server, tmp_path, backends):
    backend = make_backend(server, tmp_path, backends, watch_interval=0)  # health alone notices
    vol = backend.create_volume("pvc-x", 64 * MiB)
    export = backend.export_volume(vol.id, [HOST_A, HOST_B])
    backend.set_qos(vol.id, QoS(write_bps=8 * MiB))
    server.restart()  # nvmf_tgt forgets transports, subsystems, hosts, listeners, QoS
    assert fake(server).nvmf_get_subsystems() == [fake(server).nvmf_get_subsystems()[0]]
    assert backend.health().ready  # notices, replays
    sub = fake(server).nvmf_get_subsystems(nqn=export.subsystem_nqn)[0]
    assert {h["nqn"] for h in sub["hosts"]} == {HOST_A, HOST_B}
    assert sub["listen_addresses"] == [{"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
                                        "trsvcid": PORTAL.trsvcid}]
    assert [ns["uuid"] for ns in sub["namespaces"]] == [export.namespace_uuid]
    assert backend.target_limits(vol.id)["w_mbytes_per_sec"] == 8
    assert backend.get_volume(vol.id).qos == QoS(write_bps=8 * MiB)


def test_a_reconnect_alone_replays_and_a_new_agent_finds_everything(server, tmp_path, backends):
    backend = make_backend(server, tmp_path, backends, watch_interval=0)  # the first call alone replays
    vol = backend.create_volume("pvc-y", 64 * MiB)
    export = backend.export_volume(vol.id, [HOST_A])
    server.restart()
    assert backend.get_volume(vol.id).name == "pvc-y"  # the first call after it reconnects and replays
    assert fake(server).nvmf_get_subsystems(nqn=export.subsystem_nqn)[0]["hosts"] == [{"nqn": HOST_A}]
    again = make_backend(server, tmp_path, backends)  # a restarted agent, same state dir
    assert again.find_volume("pvc-y") == backend.get_volume(vol.id)
    assert again.get_export(vol.id) == export


def recorded(backend) -> list[str]:
    """From now on, the methods the backend sends."""
    calls: list[str] = []
    send = backend.rpc.call

    def call(method, **params):
        calls.append(method)
        return send(method, **params)
    backend.rpc.call = call
    return calls


def test_exports_are_idempotent_and_look_before_they_act(backend, server):
    vol = backend.create_volume("pvc-i", 64 * MiB)
    backend.set_qos(vol.id, QoS(write_bps=4 * MiB))
    first = backend.export_volume(vol.id, [HOST_A])
    calls = recorded(backend)
    assert backend.export_volume(vol.id, [HOST_A]) == first
    changing = [m for m in calls if not m.startswith(("nvmf_get", "bdev_get", "bdev_lvol_get"))]
    assert changing == [], "a repeat changes nothing on the target"


def test_the_spdk_backend_needs_its_base_bdev():
    from nvme_target.settings import from_args

    with pytest.raises(InvalidArgument, match="--spdk-base-bdev"):
        from_args(["--backend", "spdk", "--socket", "/tmp/x.sock"])
    settings = from_args(["--backend", "spdk", "--spdk-base-bdev", "Nvme0n1", "--socket", "/tmp/x.sock"])
    assert (settings.backend, settings.spdk_base_bdev, settings.spdk_lvstore) == ("spdk", "Nvme0n1", "sluice")


def test_an_agent_started_before_nvmf_tgt_replays_when_it_comes(tmp_path, backends):
    if spdk_real.SOCKET and not spdk_real.NVMF_TGT:
        pytest.skip("starting a target later needs SLUICE_SPDK_NVMF_TGT (the binary), not a socket")
    later = tmp_path / "later"
    later.mkdir()
    image = str(later / "spdk.img") if spdk_real.REAL else "/srv/sluice/spdk.img"
    config = SpdkConfig(socket=later / "spdk.sock", base_bdev="base0", aio_file=image, watch_interval=0)
    backend = SpdkBackend(config, (PORTAL,), tmp_path / "state")
    backends.append(backend)
    backend.restore()  # nothing there: warns, does not fail
    assert not backend.health().ready
    server = make_server(later)
    try:
        vol = backend.create_volume("pvc-late", 64 * MiB)
        assert backend.health().ready and backend.get_volume(vol.id).name == "pvc-late"
    finally:
        server.stop()


# ----------------------------------------------------------- group snapshots
def test_group_of_several_volumes_is_refused_before_anything_is_made(backend, server):
    vols = [backend.create_volume(f"pvc-g{i}", 16 * MiB).id for i in range(2)]
    bdevs = sorted(b["name"] for b in fake(server).bdev_get_bdevs())  # the real target keeps no call log
    with pytest.raises(FailedPrecondition, match="source_volume_ids: 2 volumes on an SPDK target"):
        backend.create_group_snapshot("vgs", vols)
    assert sorted(b["name"] for b in fake(server).bdev_get_bdevs()) == bdevs, "a snapshot was made"
    assert backend.list_snapshots() == []


def test_group_member_survives_a_target_restart(server, tmp_path, backends):
    backend = make_backend(server, tmp_path, backends)
    vol = backend.create_volume("pvc-g", 16 * MiB)
    group = backend.create_group_snapshot("vgs", [vol.id])
    backend.close()  # the agent restarts too (its replay loop would race the new agent's)
    server.restart()  # lvols persist on the base bdev's "disk"; Sluice's records in its state file
    again = make_backend(server, tmp_path, backends)
    assert again.get_group_snapshot(group.id) == group
    assert again.get_snapshot(group.snapshots[0].id).group_id == group.id
