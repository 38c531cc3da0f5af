"""Latency protection: the pure control loop (AIMD steps, floors, ceilings, stale
reports, fail-open, settling), its parameters, its wire form and its agent wiring."""

from __future__ import annotations

import threading
import time

import pytest

from csi_driver import params
from csi_driver.node.protection import Ceilings, Counters
from nvme_target import protect
from nvme_target.agent import convert as c
from nvme_target.agent.protection import Protection, ProtectionCollector
from nvme_target.model import IoReport, QoS, Volume
from nvme_target.protect import Protector, Sample, effective
from sluice_common.errors import InvalidArgument
from tests.fakes.memory_backend import MemoryBackend

MiB = 1 << 20
INF = QoS(qos_class="latency", latency_target_us=1000)
CKPT = QoS(qos_class="bulk")


def feed(loop: Protector, now: float, inf_us: float, ckpt_bps: float = 100 * MiB, inf_iops: float = 500) -> None:
    loop.report("inf", Sample(inf_us, inf_iops * 4096, inf_iops, now))
    loop.report("ckpt", Sample(5000, ckpt_bps, ckpt_bps / (128 << 10), now))


def test_breach_halves_from_the_measured_rate_and_calm_adds_back_then_releases():
    loop = Protector()
    feed(loop, 0, 1500)  # 1.5x the objective: factor 1000/1500 capped at DECREASE
    changes = loop.tick(0, {"inf": INF, "ckpt": CKPT})
    assert changes["ckpt"][0] == "decrease" and "inf latency 1500 us > objective 1000 us" in changes["ckpt"][1]
    assert loop.ceilings["ckpt"].bps == 50 * MiB
    feed(loop, 1, 700)  # calm (below 0.8 x 1000): one additive step of 10% of 100 MiB/s
    assert loop.tick(1, {"inf": INF, "ckpt": CKPT})["ckpt"][0] == "increase"
    assert loop.ceilings["ckpt"].bps == 60 * MiB
    for t in range(2, 20):
        feed(loop, t, 700)
        loop.tick(t, {"inf": INF, "ckpt": CKPT})
    assert "ckpt" not in loop.ceilings  # grew to 2x the squeezed rate: released
    assert loop.reasons["ckpt"].startswith("released")


def test_far_over_the_objective_cuts_deeper_but_never_below_one_eighth():
    loop = Protector()
    feed(loop, 0, 100_000)
    loop.tick(0, {"inf": INF, "ckpt": CKPT})
    assert loop.ceilings["ckpt"].bps == int(100 * MiB * protect.MIN_DECREASE)


def test_the_dead_band_holds_the_ceiling_still():
    loop = Protector()
    feed(loop, 0, 1500)
    loop.tick(0, {"inf": INF, "ckpt": CKPT})
    before = loop.ceilings["ckpt"]
    feed(loop, 1, 900)  # between 0.8 and 1 x the objective
    assert loop.tick(1, {"inf": INF, "ckpt": CKPT}) == {}
    assert loop.ceilings["ckpt"] == before


def test_never_below_the_bulk_floor():
    loop = Protector()
    policy = QoS(qos_class="bulk", min_bps=30 * MiB, min_iops=200)
    for t in range(10):
        feed(loop, t, 50_000)
        loop.tick(t, {"inf": INF, "ckpt": policy})
    assert loop.ceilings["ckpt"].bps == 30 * MiB and loop.ceilings["ckpt"].iops == 200
    feed(loop, 11, 50_000)
    assert loop.tick(11, {"inf": INF, "ckpt": policy}) == {}  # at the floor: no change reported


def test_default_floor_without_a_minimum():
    loop = Protector()
    for t in range(20):
        feed(loop, t, 50_000)
        loop.tick(t, {"inf": INF, "ckpt": CKPT})
    assert loop.ceilings["ckpt"].bps == protect.DEFAULT_FLOOR_BPS
    assert loop.ceilings["ckpt"].iops == protect.DEFAULT_FLOOR_IOPS


def test_never_above_the_static_cap_and_released_when_it_reaches_it():
    loop = Protector()
    capped = QoS(qos_class="bulk", read_bps=40 * MiB, write_bps=40 * MiB)
    feed(loop, 0, 1500)  # doing 100 MiB/s but capped at 40: the squeeze starts from 40
    loop.tick(0, {"inf": INF, "ckpt": capped})
    assert loop.ceilings["ckpt"].bps == 20 * MiB
    steps = 0
    while "ckpt" in loop.ceilings:
        steps += 1
        feed(loop, steps, 500)
        loop.tick(steps, {"inf": INF, "ckpt": capped})
        assert loop.ceilings.get("ckpt") is None or loop.ceilings["ckpt"].bps < 40 * MiB
    assert steps == 5  # +4 MiB/s per calm tick: 24, 28, 32, 36, then 40 = the cap: released


def test_effective_keeps_every_static_cap():
    static = QoS(write_bps=8 * MiB, read_iops=100, qos_class="bulk")
    assert effective(static, None) == QoS(write_bps=8 * MiB, read_iops=100)
    assert effective(static, QoS(read_bps=50 * MiB, write_bps=50 * MiB)) == QoS(
        read_bps=50 * MiB, write_bps=8 * MiB, read_iops=100)
    assert effective(QoS(), QoS(read_bps=3, write_bps=3)) == QoS(read_bps=3, write_bps=3)


def test_fail_open_when_the_protected_volumes_node_stops_reporting():
    loop = Protector()
    feed(loop, 0, 5000)
    loop.tick(0, {"inf": INF, "ckpt": CKPT})
    loop.report("ckpt", Sample(5000, 100 * MiB, 800, protect.STALE_AFTER + 1))  # only the bulk node reports
    changes = loop.tick(protect.STALE_AFTER + 1, {"inf": INF, "ckpt": CKPT})
    assert changes["ckpt"][0] == "release" and "static caps" in changes["ckpt"][1]
    assert loop.verdicts["inf"].state == "stale"


def test_fail_open_when_the_bulk_volumes_node_stops_reporting():
    loop = Protector()
    feed(loop, 0, 5000)
    loop.tick(0, {"inf": INF, "ckpt": CKPT})
    loop.report("inf", Sample(5000, 0, 500, protect.STALE_AFTER + 1))
    changes = loop.tick(protect.STALE_AFTER + 1, {"inf": INF, "ckpt": CKPT})
    assert changes["ckpt"] == ("release", "released: no fresh report from this volume's node: static caps")


def test_idle_protected_volume_releases_at_once_work_conserving():
    loop = Protector()
    feed(loop, 0, 5000)
    loop.tick(0, {"inf": INF, "ckpt": CKPT})
    feed(loop, 1, 0, inf_iops=0)
    assert loop.tick(1, {"inf": INF, "ckpt": CKPT}) == {}  # one quiet window: it may be a pause
    feed(loop, protect.IDLE_GRACE, 0, inf_iops=0)
    assert loop.tick(protect.IDLE_GRACE, {"inf": INF, "ckpt": CKPT})["ckpt"][0] == "release"


def test_an_idle_bulk_volume_is_not_squeezed():
    loop = Protector()
    feed(loop, 0, 5000, ckpt_bps=0)
    assert loop.tick(0, {"inf": INF, "ckpt": CKPT}) == {}


def test_no_objective_learns_a_baseline_and_breaches_well_above_it():
    loop, inf = Protector(), QoS(qos_class="latency")
    feed(loop, 0, 400)
    assert loop.tick(0, {"inf": inf, "ckpt": CKPT}) == {}  # learning
    feed(loop, 1, 700)  # < 2 x 400: no breach; the baseline rises only slowly
    assert loop.tick(1, {"inf": inf, "ckpt": CKPT}) == {}
    assert 400 < loop.baselines["inf"] < 420
    feed(loop, 2, 2000)
    assert loop.tick(2, {"inf": inf, "ckpt": CKPT})["ckpt"][0] == "decrease"
    assert loop.baselines["inf"] < 420  # a breach does not teach the baseline


def test_a_volume_leaving_the_bulk_class_loses_its_ceiling():
    loop = Protector()
    feed(loop, 0, 5000)
    loop.tick(0, {"inf": INF, "ckpt": CKPT})
    feed(loop, 1, 5000)
    assert loop.tick(1, {"inf": INF, "ckpt": QoS()})["ckpt"][0] == "release"
    feed(loop, 2, 5000)
    assert loop.tick(2, {"inf": INF, "ckpt": QoS()}) == {}


def test_settles_under_a_steady_load():
    """A plant whose latency rises 50 us per MiB/s above 40 MiB/s crosses the 1000 us objective
    at c* = 48 MiB/s. The ceiling stays within [c*·MIN_DECREASE, c* + one step] (the documented
    bound) and, the load being steady, comes to rest in the dead band."""
    loop, demand, critical = Protector(), 100 * MiB, 48 * MiB
    seen = []
    for t in range(200):
        ceiling = loop.ceilings.get("ckpt")
        rate = min(demand, ceiling.bps) if ceiling and ceiling.bps else demand
        latency = 600 if rate <= 40 * MiB else 600 + (rate - 40 * MiB) / MiB * 50
        feed(loop, t, latency, ckpt_bps=rate)
        loop.tick(t, {"inf": INF, "ckpt": CKPT})
        if t >= 5:
            seen.append(loop.ceilings["ckpt"].bps)
    assert min(seen) >= critical * protect.MIN_DECREASE
    assert max(seen) <= critical + demand * protect.INCREASE_STEP
    assert len(set(seen[-100:])) == 1


def test_params_validate_and_store_the_protection_keys():
    got = params.parse({"qos.class": "bulk", "qos.minBPS": "10Mi", "qos.minIOPS": "100"}).qos
    assert got == QoS(qos_class="bulk", min_bps=10 * MiB, min_iops=100)
    assert QoS.from_params(got.as_params()) == got
    lat = params.parse({"qos.class": "latency", "qos.latencyTargetUs": "2000"}).qos
    assert lat.latency_target_us == 2000 and lat.caps == QoS() and lat.unlimited
    for bad, key in [({"qos.class": "gold"}, "qos.class"), ({"qos.latencyTargetUs": "0"}, "qos.latencyTargetUs"),
                     ({"qos.latencyTargetUs": "1ms"}, "qos.latencyTargetUs"), ({"qos.minBPS": "-1"}, "qos.minBPS"),
                     ({"qos.minIOPS": "x"}, "qos.minIOPS"),
                     ({"qos.class": "bulk", "qos.latencyTargetUs": "5"}, "qos.latencyTargetUs"),
                     ({"qos.class": "latency", "qos.minBPS": "5"}, "qos.minBPS")]:
        with pytest.raises(InvalidArgument, match=key.replace(".", r"\.")):
            params.parse(bad)


def test_modify_sets_and_removes_the_class_live():
    change = params.parse_mutable({"qos.class": "bulk", "qos.writeBPS": "max"})
    merged = QoS(write_bps=8 * MiB).merged(change)
    assert merged == QoS(qos_class="bulk")
    assert merged.merged(params.parse_mutable({"qos.class": "max"})) == QoS()
    with pytest.raises(InvalidArgument, match="qos.minBPS"):
        params.check_policy(QoS(qos_class="latency").merged(params.parse_mutable({"qos.minBPS": "1Mi"})))


def test_wire_form_round_trips_policy_and_ceiling():
    vol = Volume("v1", "n", 1, qos=QoS(write_bps=5, qos_class="bulk", min_bps=3),
                 ceiling=QoS(read_bps=9, write_bps=9), ceiling_reason="decrease x0.50: why")
    assert c.volume(c.volume_pb(vol)) == vol
    reports = {"a": IoReport(12.5, 1000.0, 3.0)}
    assert c.io_reports(c.io_reports_pb("nqn", reports)) == reports


def test_counters_turn_device_stats_into_a_window():
    before = Counters.of([100, 0, 800, 50, 10, 0, 2560, 200, 0, 0, 0], 10.0)
    after = Counters.of([300, 0, 2400, 250, 10, 0, 2560, 200, 0, 0, 0], 10.5)
    report = after.since(before)
    assert report == IoReport(1000.0, 1600 * 512 / 0.5, 400.0)  # 200 I/Os in 200 ms, 800 KiB in 0.5 s
    assert Counters.of([0] * 11, 11).since(after) is None  # a new device: counters went back


def test_node_ceilings_report_changes_only():
    ceilings = Ceilings()
    assert ceilings.set("t/v", QoS(write_bps=5), "decrease")
    assert not ceilings.set("t/v", QoS(write_bps=5), "decrease")
    assert ceilings.get("t/v") == QoS(write_bps=5)
    assert ceilings.set("t/v", None, "")
    assert ceilings.get("t/v") is None and ceilings.volumes() == []


def test_agent_loop_sends_ceilings_on_the_watch_stream_and_fails_open():
    backend, now = MemoryBackend(), [0.0]
    inf = backend.create_volume("inf", 1 << 20)
    ckpt = backend.create_volume("ckpt", 1 << 20)
    backend.set_qos(inf.id, INF)
    backend.set_qos(ckpt.id, QoS(qos_class="bulk", write_bps=500 * MiB))
    protection = Protection(backend, clock=lambda: now[0])
    stop = threading.Event()
    stream = backend.watch_volumes([ckpt.id], stop, tick=0.05, decorate=protection.decorate)
    assert next(stream).ceiling is None
    protection.report("nqn.node", {inf.id: IoReport(4000, 2e6, 500), ckpt.id: IoReport(9000, 100 * MiB, 800)})
    protection.step()
    sent = next(stream)
    assert sent.ceiling == QoS(read_bps=25 * MiB, write_bps=25 * MiB, read_iops=200, write_iops=200)
    assert "latency 4000 us > objective 1000 us" in sent.ceiling_reason
    metrics = {s.name: s.value for f in ProtectionCollector(protection, "t").collect() for s in f.samples}
    assert metrics["sluice_agent_protection_ceiling_bytes_per_second"] == 25 * MiB
    assert metrics["sluice_agent_protected_latency_seconds"] == pytest.approx(0.004)
    now[0] = protect.STALE_AFTER + 1  # the nodes went silent
    protection.step()
    assert next(stream).ceiling is None
    stop.set()


def test_an_attached_loop_takes_reports_and_decorates_watches_on_the_backend_itself():
    backend = MemoryBackend()
    inf, ckpt = backend.create_volume("inf", 1 << 20), backend.create_volume("ckpt", 1 << 20)
    backend.set_qos(inf.id, INF)
    backend.set_qos(ckpt.id, CKPT)
    protection = Protection.attach(backend, tick=0.05)
    stop = threading.Event()
    stream = backend.watch_volumes([ckpt.id], stop, tick=0.05)
    assert next(stream).ceiling is None
    backend.report_io("nqn.node", {inf.id: IoReport(4000, 2e6, 500), ckpt.id: IoReport(9000, 100 * MiB, 800)})
    assert next(stream).ceiling.write_bps <= 25 * MiB  # the loop ran on its own thread
    assert protection.loop.ceilings
    stop.set()


def test_a_report_wakes_the_loop_instead_of_waiting_for_the_tick():
    backend = MemoryBackend()
    inf, ckpt = backend.create_volume("inf", 1 << 20), backend.create_volume("ckpt", 1 << 20)
    backend.set_qos(inf.id, INF)
    backend.set_qos(ckpt.id, CKPT)
    protection = Protection.attach(backend, tick=30.0)  # a tick that never comes within the test
    try:
        time.sleep(0.1)
        began = time.monotonic()
        backend.report_io("nqn.node", {inf.id: IoReport(4000, 2e6, 500), ckpt.id: IoReport(9000, 100 * MiB, 800)})
        while not protection.loop.ceilings and time.monotonic() - began < 10:
            time.sleep(0.01)
        assert protection.loop.ceilings, "the report was acted on"
        assert time.monotonic() - began < 5, "well before the 30 s tick"
    finally:
        protection.stop()


def test_the_node_watch_applies_ceilings_and_drops_them_when_the_target_goes_away():
    from csi_driver import ids
    from csi_driver.node.limits_watch import LimitsWatch
    from csi_driver.targets import Target, TargetConfig, Targets
    from sluice_common.errors import Unavailable

    backend = MemoryBackend()
    ckpt = backend.create_volume("ckpt", 1 << 20)
    backend.set_qos(ckpt.id, CKPT)
    ceiling = QoS(read_bps=5, write_bps=5)
    calls = []

    class Flaky(MemoryBackend):
        def watch_volumes(self, volume_ids, stop, tick=1.0, decorate=None):
            yield Volume(ckpt.id, "ckpt", 1, qos=CKPT, ceiling=ceiling, ceiling_reason="decrease x0.50: why")
            raise Unavailable("agent gone")

    flaky = Flaky()
    volume_id = ids.join("t", ckpt.id)
    watch = LimitsWatch(Targets([Target(TargetConfig("t"), flaky)]), lambda: [volume_id], lambda *a: None,
                        on_ceiling=lambda *a: calls.append(a))
    watch._stream(next(iter(watch.targets)))
    assert calls == [(volume_id, ceiling, "decrease x0.50: why"), (volume_id, None, "")]


def test_one_report_is_acted_on_once_however_often_the_loop_ticks():
    loop = Protector()
    feed(loop, 0, 1500)
    loop.tick(0.0, {"inf": INF, "ckpt": CKPT})
    assert loop.tick(0.25, {"inf": INF, "ckpt": CKPT}) == {}
    assert loop.ceilings["ckpt"].bps == 50 * MiB


def test_a_stalled_protected_reader_is_a_breach_not_idle():
    loop = Protector()
    loop.report("inf", Sample(400_000, 0, 0, 0))  # nothing completed, I/O in flight the whole window
    loop.report("ckpt", Sample(5000, 100 * MiB, 800, 0))
    assert loop.tick(0, {"inf": INF, "ckpt": CKPT})["ckpt"][0] == "decrease"
    loop.report("inf", Sample(300, 4096, 1, protect.IDLE_GRACE))  # a trickle at a good latency, for long
    assert loop.tick(protect.IDLE_GRACE, {"inf": INF, "ckpt": CKPT})["ckpt"][0] == "release"


def test_a_window_with_io_in_flight_but_none_completed_reports_the_time_in_flight():
    before = Counters.of([10, 0, 80, 5, 0, 0, 0, 0, 1, 100, 0], 0.0)
    stalled = Counters.of([10, 0, 80, 5, 0, 0, 0, 0, 1, 550, 0], 0.5)
    assert stalled.since(before) == IoReport(450_000.0, 0.0, 0.0)


def test_the_node_reporter_measures_only_volumes_in_a_protection_class(tmp_path, monkeypatch):
    """An idle node whose volumes take no part in protection reads no device stats and
    sends nothing (it read every device twice a second before); a bulk volume is measured."""
    import json

    from csi_driver.node import protection as node_protection
    from csi_driver.node.staging import StagingRecord

    def record(vid: str, qos: dict) -> StagingRecord:
        return StagingRecord(vid, str(tmp_path / vid), f"nqn.2026-01.dev.sluice:{vid}", "u-" + vid,
                             "10.0.0.3:4420", "block", qos=qos)

    sent: list = []

    class Backend:
        def report_io(self, host_nqn, reports):
            sent.append(dict(reports))

    class Target:
        id, backend = "t", Backend()

    PLAIN, BULK = "v-" + "0" * 32, "v-" + "1" * 32
    records = [record(f"t/{PLAIN}", {"qos.writeBPS": "1000000"})]
    reporter = node_protection.IoReporter([Target()], lambda: records, "nqn.host", Ceilings(), tmp_path / "state")
    monkeypatch.setattr(reporter.namespaces, "get", lambda: pytest.fail("sysfs read for unclassed volumes"))
    monkeypatch.setattr(node_protection, "diskstats", lambda: pytest.fail("diskstats read for unclassed volumes"))
    reporter.step()
    assert sent == [] and json.loads((tmp_path / "state" / "protection.json").read_text())["volumes"] == {}

    records.append(record(f"t/{BULK}", {"qos.class": "bulk"}))
    monkeypatch.setattr(reporter.namespaces, "get", lambda: {f"u-t/{BULK}": type("Ns", (), {"device": "nvme1n1"})})
    monkeypatch.setattr(node_protection, "diskstats", dict)
    stats = iter([[10, 0, 80, 20, 0, 0, 0, 0, 0, 5, 0], [30, 0, 240, 60, 0, 0, 0, 0, 0, 9, 0]])
    monkeypatch.setattr(node_protection, "disk_stat", lambda device, all_stats: next(stats))
    reporter.step()
    reporter.step()
    assert list(sent[-1]) == [BULK] and sent[-1][BULK].latency_us == 2000.0
