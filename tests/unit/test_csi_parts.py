"""Host tests of the CSI driver's plain parts: parameters, quantities, ids, paging,
placement, in-flight guards, settings, redaction."""

from __future__ import annotations

import threading

import pytest

from csi_driver import ids, paging, params, placement, quantity, settings
from csi_driver.locks import InFlight, Reservations
from csi_driver.redact import loggable
from csi_driver.targets import Target, TargetConfig
from sluice_common.errors import Busy, InvalidArgument, NoSpace, NotFound, StaleToken
from sluice_proto import csi_pb2


@pytest.mark.parametrize("text, value", [
    ("1048576", 1048576), ("500Mi", 500 << 20), ("2G", 2 * 10**9), ("1.5Gi", 3 << 29),
    ("1e3", 1000), ("100k", 100_000), ("0.5Ki", 512), ("1.0001k", 1001),
])
def test_quantities(text, value):
    assert quantity.parse(text, "f") == value


@pytest.mark.parametrize("text", ["", "Mi", "1.2.3", "-5Mi", "10 Mi", "1Xi", "0x10"])
def test_bad_quantities(text):
    with pytest.raises(InvalidArgument, match="qos.x"):
        quantity.parse(text, "qos.x")


def test_params_normalise_and_accept_sidecar_keys():
    p = params.parse({"qos.readIOPS": "500", "qos.writeBPS": "1Gi", "nvme.nrIoQueues": "4",
                      "pool": "fast", "csi.storage.k8s.io/pvc/name": "x"})
    assert p.as_params() == {"qos.readIOPS": "500", "qos.writeBPS": str(1 << 30),
                             "nvme.nrIoQueues": "4", "pool": "fast"}
    assert params.parse({}).as_params() == {}


@pytest.mark.parametrize("given, key", [
    ({"qos.readIOPS": "0"}, "qos.readIOPS"), ({"qos.writeIOPS": "1.5"}, "qos.writeIOPS"),
    ({"qos.readBPS": "-1"}, "qos.readBPS"), ({"nvme.keepAliveTmo": "301"}, "nvme.keepAliveTmo"),
    ({"nvme.ctrlLossTmo": "x"}, "nvme.ctrlLossTmo"), ({"fsType": "xfs"}, "fsType"),
    ({"nvme.ctrlLossTmo": "5", "nvme.reconnectDelay": "10"}, "reconnectDelay"),
    ({"pool": ""}, "pool"),
])
def test_bad_params_name_the_key(given, key):
    with pytest.raises(InvalidArgument, match=key):
        params.parse(given)


def test_mutable_params_are_qos_only():
    assert params.parse_mutable({"qos.readIOPS": "9"}) == params.QoS(read_iops=9)
    with pytest.raises(InvalidArgument, match="nvme.ctrlLossTmo"):
        params.parse_mutable({"nvme.ctrlLossTmo": "9"})
    assert params.QoS(read_iops=1, write_iops=2).merged(params.QoS(read_iops=5)) == params.QoS(5, 2)
    removal = params.parse_mutable({"qos.writeIOPS": "max", "qos.readBPS": "1Mi"})
    assert params.QoS(read_iops=1, write_iops=2).merged(removal) == params.QoS(1, None, 1 << 20)


def test_ids():
    vid = "t1/v-" + "a" * 32
    assert ids.split_volume(vid) == ("t1", "v-" + "a" * 32)
    for bad in ("", "t1", "t1/", "/v-" + "a" * 32, "T1/v-" + "a" * 32, "t1/s-" + "a" * 32, vid + "x"):
        with pytest.raises(NotFound):
            ids.split_volume(bad)
    with pytest.raises(InvalidArgument):
        ids.check_target_id("Bad_Target")


def test_paging():
    ok = lambda t: t.startswith("k")  # noqa: E731
    items = ["k3", "k1", "k2", "k5", "k4"]
    first, token = paging.page(items, str, 2, "", ok)
    second, token2 = paging.page(items, str, 2, token, ok)
    third, token3 = paging.page(items, str, 2, token2, ok)
    assert (first, second, third, token3) == (["k1", "k2"], ["k3", "k4"], ["k5"], "")
    assert paging.page(items, str, 0, "", ok) == (sorted(items), "")
    with pytest.raises(StaleToken):
        paging.page(items, str, 2, "zzz", ok)
    with pytest.raises(InvalidArgument):
        paging.page(items, str, -1, "", ok)


def target(tid: str, zone: str, pool: str | None = None) -> Target:
    return Target(TargetConfig(id=tid, topology={"csi.sluice.dev/zone": zone}, pool=pool), backend=None)


def test_placement_filters_and_orders():
    a, b, c = target("a", "z1", "fast"), target("b", "z2"), target("c", "z1")
    z1 = {"csi.sluice.dev/zone": "z1"}
    z2 = {"csi.sluice.dev/zone": "z2"}
    assert placement.eligible([a, b, c], "fast", []) == [a]
    assert placement.eligible([a, b, c], None, [z2]) == [b]
    for name in ("pvc-1", "pvc-2", "pvc-3"):
        ordered = placement.candidates(name, [a, b, c], [z1])
        assert ordered[2] is b, "z1 first, whatever the hash"
        assert ordered == placement.candidates(name, [c, b, a], [z1]), "the order depends on the name only"


def test_rendezvous_order_is_stable_and_spread():
    pool = [target(f"t{i}", "z") for i in range(8)]
    names = [f"pvc-{i}" for i in range(800)]
    first = {n: placement.candidates(n, pool)[0].id for n in names}
    counts = {t.id: list(first.values()).count(t.id) for t in pool}
    assert min(counts.values()) > 40, counts  # 100 each on average
    grown = pool + [target("t8", "z")]
    moved = [n for n in names if placement.candidates(n, grown)[0].id != first[n]]
    assert all(placement.candidates(n, grown)[0].id == "t8" for n in moved), "only names won by the new target move"
    for n in names[:50]:  # removing a target keeps the relative order of the others
        assert [t.id for t in placement.candidates(n, grown) if t.id != "t8"] == \
            [t.id for t in placement.candidates(n, pool)]


def test_target_serves_a_segment_that_includes_its_keys():
    t = target("a", "z1")
    assert t.serves({"csi.sluice.dev/zone": "z1", "csi.sluice.dev/node": "n7"})
    assert not t.serves({"csi.sluice.dev/zone": "z2"}) and not t.serves({})


def test_inflight_guard_answers_busy_and_does_not_leak():
    guard = InFlight()
    entered, release = threading.Event(), threading.Event()

    def hold():
        with guard.guard("volume:a"):
            entered.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    entered.wait(5)
    with pytest.raises(Busy):
        with guard.guard("volume:a"):
            pass
    with guard.guard("volume:b"):
        pass
    release.set()
    worker.join()
    assert len(guard) == 0
    with pytest.raises(RuntimeError):
        with guard.guard("volume:c"):
            raise RuntimeError("boom")
    assert len(guard) == 0


def test_settings():
    s = settings.from_args(["--mode", "all", "--endpoint", "unix:///tmp/x/csi.sock", "--target-pv", "/dev/sdb",
                            "--target-topology", "csi.sluice.dev/zone=a"])
    assert s.controller and s.node and str(s.endpoint) == "/tmp/x/csi.sock"
    assert s.local_target.pvs == ("/dev/sdb",) and s.local_target.topology == {
        "csi.sluice.dev/fabric": "default", "csi.sluice.dev/zone": "a"}
    with pytest.raises(InvalidArgument, match="targets-config"):
        settings.from_args(["--mode", "controller"])
    with pytest.raises(InvalidArgument, match="endpoint"):
        settings.from_args(["--endpoint", "relative.sock"])
    ctl = settings.from_args(["--mode", "controller", "--targets-config", "/t.json", "--max-volumes-per-node", "4",
                              "--target-read-timeout", "2.5"])
    assert (ctl.max_volumes_per_node, ctl.read_timeout, ctl.node) == (4, 2.5, None)
    with pytest.raises(InvalidArgument, match="read-timeout"):
        settings.from_args(["--mode", "controller", "--targets-config", "/t.json", "--target-read-timeout", "0"])


def test_redaction_reads_the_csi_secret_option():
    req = csi_pb2.NodeStageVolumeRequest(
        volume_id="t/v", secrets={"password": "hunter2"}, publish_context={"nvme.subnqn": "nqn.x"},
        volume_capability=csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(fs_type="xfs", mount_flags=["context=secret"])))
    out = loggable(req)
    assert "hunter2" not in repr(out) and "context=secret" not in repr(out)
    assert out["secrets"] == "<1 redacted>" and out["publish_context"] == {"nvme.subnqn": "nqn.x"}
    assert out["volume_capability"]["mount"]["fs_type"] == "xfs"


def test_reservations_take_turns_and_see_the_claims_in_flight():
    claims = Reservations(wait=5)
    seen: list[frozenset[str]] = []
    inside, release = threading.Event(), threading.Event()

    def hold():
        with claims.claim("node:n", "v1", seen.append):
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    inside.wait(5)
    with claims.claim("node:n", "v2", seen.append):  # no Busy: v1's turn ended with its claim
        pass
    release.set()
    worker.join()
    assert seen == [frozenset(), frozenset({"v1"})] and len(claims) == 0


def test_reservations_refuse_when_the_check_does_and_wait_only_so_long():
    claims = Reservations(wait=0.2)

    def refuse(_pending):
        raise NoSpace("full")

    with pytest.raises(NoSpace):
        with claims.claim("node:n", "v1", refuse):
            pass
    assert len(claims) == 0
    entered, release = threading.Event(), threading.Event()

    def slow_check(_pending):
        entered.set()
        release.wait(5)

    def hold():
        with claims.claim("node:n", "v1", slow_check):
            pass

    worker = threading.Thread(target=hold)
    worker.start()
    entered.wait(5)
    with pytest.raises(Busy, match="no turn"):
        with claims.claim("node:n", "v2", lambda _pending: None):
            pass
    with claims.claim("node:m", "v3", lambda _pending: None):  # another key does not wait
        pass
    release.set()
    worker.join()
    assert len(claims) == 0
