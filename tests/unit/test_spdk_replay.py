"""What issue 14 found against a real nvmf_tgt, as tests (the fake here; the real target
with SLUICE_SPDK_NVMF_TGT, see tests/fakes/spdk_real.py): an agent starts with limited
volumes, exported or not; agent, target and both restart in either order; a restarted
target is replayed with nobody calling; a limit changed on an unexported volume is the
one in force once it is exported; one object that cannot be restored stops nothing."""

from __future__ import annotations

import os
import stat
import time
from types import SimpleNamespace

import pytest

from nvme_target import naming
from nvme_target.model import QoS
from nvme_target.spdk.backend import SpdkBackend, SpdkConfig, aio_block_size
from nvme_target.spdk.qos import spdk_limits
from nvme_target.spdk.rpc import SpdkRpc
from sluice_common.errors import Unavailable
from tests.contract.backend_contract import HOST_A, HOST_B, MiB
from tests.fakes.spdk_target import FakeSpdk, FakeSpdkServer, RpcError
# the fixtures of test_spdk_backend.py, shared (their names are re-used as parameters)
# ruff: noqa: F811
from tests.unit.test_spdk_backend import PORTAL, backend, backends, make_backend, recorded, server  # noqa: F401

LIMIT = QoS(read_iops=700, write_iops=800, write_bps=5 * MiB)
OTHER = QoS(write_bps=9 * MiB)
NONE = spdk_limits(QoS())
CHANGING = ("nvmf_create_transport", "bdev_aio_create", "bdev_lvol_create_lvstore", "nvmf_create_subsystem",
            "nvmf_subsystem_add_ns", "nvmf_subsystem_add_listener", "nvmf_subsystem_add_host", "bdev_set_qos_limit")


def limits_of(server, vol_id: str) -> dict:
    return server.target.bdev_get_bdevs(name=f"sluice/{vol_id}")[0]["assigned_rate_limits"]


def populate(backend) -> dict[str, tuple[frozenset[str], QoS | None]]:
    """a: exported, limited; b: exported, never limited; c: limited, never exported;
    d: exported with a limit, unexported, then limited again (SPDK keeps the old one)."""
    a, b, c, d = (backend.create_volume(f"pvc-{n}", 64 * MiB).id for n in "abcd")
    backend.export_volume(a, [HOST_A, HOST_B])
    backend.set_qos(a, LIMIT)
    backend.add_host(b, HOST_A)
    backend.set_qos(c, LIMIT)
    backend.export_volume(d, [HOST_A])
    backend.set_qos(d, LIMIT)
    backend.unexport_volume(d)
    backend.set_qos(d, OTHER)  # SPDK answers -EAGAIN to this one: kept for the export
    return {a: (frozenset({HOST_A, HOST_B}), LIMIT), b: (frozenset({HOST_A}), None)}


def restored(server, exports: dict) -> bool:
    """Asked of the target alone: no call reaches the agent."""
    for vol_id, (hosts, qos) in exports.items():
        try:
            sub = server.target.nvmf_get_subsystems(nqn=naming.subsystem_nqn(vol_id))[0]
            limits = limits_of(server, vol_id)
        except RpcError:
            return False
        listeners = {(a["traddr"], str(a["trsvcid"])) for a in sub["listen_addresses"]}
        if ({h["nqn"] for h in sub["hosts"]} != hosts or listeners != {(PORTAL.traddr, PORTAL.trsvcid)}
                or [ns["uuid"] for ns in sub["namespaces"]] != [naming.namespace_uuid(vol_id)]
                or limits != spdk_limits(qos or QoS())):
            return False
    return True


def target_errors(server) -> list[str]:
    """What the target logged as errors: the real one's log, the fake's record."""
    if hasattr(server, "log"):
        return [line for line in server.log.read_text().splitlines() if "*ERROR*" in line]
    if isinstance(server.target, FakeSpdk):
        return list(server.target.errors_logged)
    return []  # a shared target (SLUICE_SPDK_SOCKET): its log is not ours to read


def wait_until(check, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not restored in time"
        time.sleep(0.05)
    return time.monotonic() - start


def unexported_limits_follow_at_export(backend, server) -> None:
    c, d = backend.find_volume("pvc-c"), backend.find_volume("pvc-d")
    assert (c.qos, d.qos) == (LIMIT, OTHER)
    backend.export_volume(c.id, [HOST_A])
    backend.export_volume(d.id, [HOST_A])
    assert (limits_of(server, c.id), limits_of(server, d.id)) == (spdk_limits(LIMIT), spdk_limits(OTHER))


# ------------------------------------------------------------------ restarts
def test_an_agent_starts_with_limited_volumes_after_a_node_reboot(backend, server, tmp_path, backends):
    exports = populate(backend)
    backend.close()
    server.restart()  # target first, then the agent: a node reboot
    again = make_backend(server, tmp_path, backends)
    health = again.health()
    assert health.ready and health.problems == ()
    assert restored(server, exports)
    unexported_limits_follow_at_export(again, server)


def test_an_agent_restarted_alone_changes_nothing_on_the_target(backend, server, tmp_path, backends):
    exports = populate(backend)
    backend.close()
    config = SpdkConfig(socket=server.path, base_bdev="base0", aio_file=server.image, watch_interval=0.2)
    again = SpdkBackend(config, (PORTAL,), tmp_path / "state")
    backends.append(again)
    calls = recorded(again)
    logged = target_errors(server)
    again.restore()
    assert again.health() == again.health() and again.health().ready and again.health().problems == ()
    assert [m for m in calls if m in CHANGING] == [], "a healthy target gets no change"
    assert target_errors(server) == logged, "and logs no error"
    assert restored(server, exports)
    unexported_limits_follow_at_export(again, server)


def test_a_restarted_target_is_replayed_with_nobody_calling(backend, server):
    exports = populate(backend)
    server.restart()
    took = wait_until(lambda: restored(server, exports))
    print(f"target restart: exports, hosts, listeners, namespaces and limits back in {took:.2f} s")
    assert backend.health().problems == ()


@pytest.mark.parametrize("agent_first", [True, False], ids=["agent-first", "target-first"])
def test_target_and_agent_restart_in_either_order(backend, server, tmp_path, backends, agent_first):
    exports = populate(backend)
    backend.close()
    server.down()
    if agent_first:
        again = make_backend(server, tmp_path, backends)  # starts while nvmf_tgt is down: no crash
        assert not again.health().ready
        server.up()
    else:
        server.up()
        again = make_backend(server, tmp_path, backends)
    took = wait_until(lambda: restored(server, exports))
    print(f"{'agent' if agent_first else 'target'} first: restored {took:.2f} s after both were up")
    assert again.health().ready and again.health().problems == ()
    unexported_limits_follow_at_export(again, server)


# -------------------------------------------------------------------- limits
def test_the_limit_in_force_after_export_is_the_last_one_asked_for(backend, server):
    never = backend.create_volume("pvc-n", 64 * MiB).id
    backend.set_qos(never, LIMIT)
    backend.set_qos(never, OTHER)  # SPDK alone would refuse a change here once it has a limit
    backend.export_volume(never, [HOST_A])
    assert limits_of(server, never) == spdk_limits(OTHER)
    again = backend.create_volume("pvc-u", 64 * MiB).id
    backend.export_volume(again, [HOST_A])
    backend.set_qos(again, LIMIT)
    backend.remove_host(again, HOST_A)
    backend.unexport_volume(again)
    backend.set_qos(again, OTHER)
    backend.set_qos(again, QoS())  # cleared while unexported
    assert backend.get_volume(again).qos == QoS()
    backend.add_host(again, HOST_B)
    assert limits_of(server, again) == NONE


def test_a_limit_change_spdk_refuses_for_now_is_unavailable_not_internal(backend, server):
    vol = backend.create_volume("pvc-e", 64 * MiB).id
    rpc = SpdkRpc(server.path)
    rpc.call("bdev_set_qos_limit", name=f"sluice/{vol}", rw_ios_per_sec=1000)
    with pytest.raises(Unavailable, match="temporarily unavailable") as info:
        rpc.call("bdev_set_qos_limit", name=f"sluice/{vol}", rw_ios_per_sec=2000)
    assert info.value.details["spdk_code"] == -32602
    rpc.close()


# ----------------------------------------------------------------- isolation
def test_one_export_that_cannot_be_restored_stops_nothing_else(backend, server):
    exports = populate(backend)
    lost, kept = sorted(exports)
    server.target.bdev_lvol_delete(name=f"sluice/{lost}")  # behind the agent's back
    server.restart()
    wait_until(lambda: restored(server, {kept: exports[kept]}))
    health = backend.health()
    assert health.ready and any(lost in why for why in health.problems), health
    assert backend.create_volume("pvc-after", 64 * MiB).size_bytes == 64 * MiB


def test_the_replay_loop_outlives_its_failures(backend, server, monkeypatch):
    exports = populate(backend)
    failures = []
    real = backend.has_transport

    def flaky():
        if len(failures) < 3:
            failures.append(1)
            raise RuntimeError("boom")
        return real()
    monkeypatch.setattr(backend, "has_transport", flaky)
    server.restart()
    wait_until(lambda: restored(server, exports))
    assert len(failures) == 3


# ------------------------------------------------------------ aio block size
def test_the_aio_block_size_comes_from_the_device(tmp_path, monkeypatch, backends):
    regular = tmp_path / "file.img"
    regular.write_bytes(b"")
    assert aio_block_size(str(regular)) == 4096  # SPDK cannot detect one for a file
    device = "/dev/fake-512"
    fake = FakeSpdkServer(tmp_path / "spdk.sock", FakeSpdk({device: 4 << 30}, devices={device: 512}))
    block = os.stat_result((stat.S_IFBLK | 0o660, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    monkeypatch.setattr("nvme_target.spdk.backend.os", SimpleNamespace(stat=lambda p: block))
    try:
        config = SpdkConfig(socket=fake.path, base_bdev="base0", aio_file=device, watch_interval=0)
        backend = SpdkBackend(config, (PORTAL,), tmp_path / "state")
        backends.append(backend)
        backend.restore()
        assert backend.health().ready
        assert fake.target.bdev_get_bdevs(name="base0")[0]["block_size"] == 512
        assert fake.target.errors_logged == []
    finally:
        fake.stop()


def test_limits_spdk_does_not_take_yet_are_kept_and_retried_in_the_background(server, tmp_path, backends,
                                                                               monkeypatch):
    backend = make_backend(server, tmp_path, backends, limit_retry_seconds=0.3)
    vol = backend.create_volume("pvc-p", 64 * MiB).id
    backend.export_volume(vol, [HOST_A])
    refused = []
    send = backend.rpc.call

    def call(method, **params):
        if method == "bdev_set_qos_limit" and len(refused) < 12:  # SPDK still busy with QoS
            refused.append(method)
            raise Unavailable("SPDK bdev_set_qos_limit: Failed to configure rate limit: "
                              "Resource temporarily unavailable", spdk_code=-32602)
        return send(method, **params)
    monkeypatch.setattr(backend.rpc, "call", call)
    with pytest.raises(Unavailable):
        backend.set_qos(vol, LIMIT)  # retryable for the caller ...
    assert backend.get_volume(vol).qos == LIMIT  # ... and kept
    if len(refused) < 12:  # the loop may already have got it in
        assert f"limits of {vol} not in force on the target yet; retrying" in backend.health().problems
    wait_until(lambda: limits_of(server, vol) == spdk_limits(LIMIT)  # the loop got it in
               and not backend.replay.pending_limits)
    assert len(refused) == 12
