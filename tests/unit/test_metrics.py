"""The collectors on recorded sysfs/cgroupfs layouts and fake backends: every family
carries what its source says, and nothing is invented when a source is missing."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from csi_driver import metrics as driver_metrics
from csi_driver.node import fabrics
from csi_driver.node import metrics as node_metrics
from csi_driver.node.path_events import PathEvents
from csi_driver.node.staging import StagingRecord, StagingStore
from csi_driver.targets import Target, TargetConfig, Targets
from nvme_target.metrics import REPLAYS, AgentCollector, counted
from nvme_target.spdk.backend import SpdkBackend, SpdkConfig
from nvme_target.model import Portal, QoS
from tests.fakes.memory_backend import MemoryBackend
from tests.fakes.spdk_target import FakeSpdk, FakeSpdkServer

MiB, GiB = 1 << 20, 1 << 30
UUID = "5f0c3b7e-1a2b-4c3d-8e9f-001122334455"
POD = "0b6a2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
HOST = "nqn.2014-08.org.nvmexpress:uuid:host-a"


def scrape(*collectors) -> dict[str, list[tuple[dict, float]]]:
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples, name: str, **labels) -> float:
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, f"{name} {labels}: {samples.get(name)}"
    return found[0]


@pytest.fixture
def node_fs(tmp_path, monkeypatch):
    """/sys/block, /sys/class/nvme and a cgroup v2 tree as the kernel shows them."""
    block, nvme, cg = tmp_path / "block", tmp_path / "nvme", tmp_path / "cgroup"
    disk = block / "nvme3n1"
    disk.mkdir(parents=True)
    (disk / "uuid").write_text(UUID + "\n")
    (disk / "dev").write_text("259:7\n")
    (disk / "size").write_text(str(128 * 2048) + "\n")
    # reads 100 ops 2048 sectors 50 ms; writes 40 ops 8192 sectors 400 ms; 3 in flight; 300 ms busy
    (tmp_path / "diskstats").write_text(" 259       7 nvme3n1 100 0 2048 50 40 0 8192 400 3 300 450 0 0 0 0 0 0\n")
    for name, state in (("nvme3", "live"), ("nvme4", "connecting")):
        (nvme / name).mkdir(parents=True)
        (nvme / name / "subsysnqn").write_text("nqn.2026-01.dev.sluice:vol-a\n")
        (nvme / name / "state").write_text(state + "\n")
        (nvme / name / "address").write_text(f"traddr=10.0.0.{name[-1]},trsvcid=4420\n")
    pod = cg / "kubepods.slice/kubepods-burstable.slice" / f"kubepods-burstable-pod{POD.replace('-', '_')}.slice"
    pod.mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (pod / "io.max").write_text("259:7 rbps=max wbps=4194304 riops=max wiops=max\n")
    (pod / "io.stat").write_text("259:7 rbytes=1024 wbytes=4096000 rios=1 wios=250 dbytes=0 dios=0\n")
    (pod / "io.pressure").write_text("some avg10=1.00 avg60=0.50 avg300=0.10 total=2500000\n"
                                     "full avg10=0.50 avg60=0.20 avg300=0.00 total=1000000\n")
    monkeypatch.setattr(node_metrics, "SYS_BLOCK", block)
    monkeypatch.setattr(node_metrics, "DISKSTATS", tmp_path / "diskstats")
    monkeypatch.setattr(fabrics, "SYS_NVME", nvme)
    return tmp_path, pod


def staged(tmp_path: Path, qos: dict, context: dict | None = None) -> StagingStore:
    store = StagingStore(tmp_path / "state")
    (tmp_path / "staging").mkdir(exist_ok=True)
    record = StagingRecord("vol-a", str(tmp_path / "staging" / "vol-a"), "nqn.2026-01.dev.sluice:vol-a", UUID,
                           "10.0.0.3:4420", "block", context=context or {}, qos=qos)
    store.save(record.with_publication("/pods/x/vol", POD))
    return store


def test_node_volume_pod_and_path_figures(node_fs):
    root, pod = node_fs
    store = staged(root, {"qos.writeBPS": str(4 * MiB)},
                   {"csi.storage.k8s.io/pvc/name": "ckpt", "csi.storage.k8s.io/pvc/namespace": "ml"})
    events = PathEvents()
    events.seen("change", "nvme4", "connected")
    events.seen("change", "nvme4", "connected")
    m = scrape(node_metrics.NodeCollector(store, root / "cgroup", events))
    vol = {"volume_id": "vol-a", "pvc_name": "ckpt", "pvc_namespace": "ml"}
    assert value(m, "sluice_node_volume_write_bytes_total", **vol) == 8192 * 512
    assert value(m, "sluice_node_volume_read_bytes_total", **vol) == 2048 * 512
    assert value(m, "sluice_node_volume_write_ops_total", **vol) == 40
    assert value(m, "sluice_node_volume_write_time_seconds_total", **vol) == pytest.approx(0.4)
    assert value(m, "sluice_node_volume_io_time_seconds_total", **vol) == pytest.approx(0.3)
    assert value(m, "sluice_node_volume_io_in_flight", **vol) == 3
    assert value(m, "sluice_node_volume_size_bytes", **vol) == 128 * MiB
    assert value(m, "sluice_node_volume_attached", **vol) == 1
    assert value(m, "sluice_node_volume_abnormal", **vol) == 0
    assert value(m, "sluice_node_volume_limit_wanted", limit="wbps", **vol) == 4 * MiB
    assert value(m, "sluice_node_pod_io_max", pod_uid=POD, limit="wbps") == 4 * MiB
    assert [lab["limit"] for lab, _ in m["sluice_node_pod_io_max"]] == ["wbps"]  # "max" is no limit
    assert value(m, "sluice_node_pod_limits_in_force", pod_uid=POD) == 1
    assert value(m, "sluice_node_pod_write_bytes_total", pod_uid=POD) == 4096000
    assert value(m, "sluice_node_pod_write_ops_total", pod_uid=POD) == 250
    assert value(m, "sluice_node_pod_io_pressure_seconds_total", pod_uid=POD, kind="some") == 2.5
    assert value(m, "sluice_node_pod_io_pressure_seconds_total", pod_uid=POD, kind="full") == 1.0
    assert value(m, "sluice_node_path_up", controller="nvme3", traddr="10.0.0.3") == 1
    assert value(m, "sluice_node_path_up", controller="nvme4") == 0
    assert value(m, "sluice_node_path_state", controller="nvme4", state="connecting") == 1
    assert value(m, "sluice_node_path_reconnects_total", controller="nvme4") == 1
    assert value(m, "sluice_node_path_reconnects_total", controller="nvme3") == 0


def test_node_reports_a_limit_not_in_force_and_a_volume_without_paths(node_fs):
    root, pod = node_fs
    store = staged(root, {"qos.writeBPS": str(8 * MiB)})
    for ctrl in ("nvme3", "nvme4"):
        (root / "nvme" / ctrl / "state").write_text("resetting\n")
    m = scrape(node_metrics.NodeCollector(store, root / "cgroup", PathEvents()))
    assert value(m, "sluice_node_pod_limits_in_force", pod_uid=POD, pvc_name="") == 0
    assert value(m, "sluice_node_volume_abnormal", volume_id="vol-a") == 1
    (pod / "io.max").unlink()
    (root / "block" / "nvme3n1" / "uuid").write_text("another\n")  # the namespace went away
    m = scrape(node_metrics.NodeCollector(store, root / "cgroup", PathEvents()))
    assert value(m, "sluice_node_volume_attached", volume_id="vol-a") == 0
    assert "sluice_node_volume_write_bytes_total" not in m  # nothing invented for a missing device
    assert value(m, "sluice_node_pod_limits_in_force", pod_uid=POD) == 0


def test_path_events_count_reconnects_not_connects():
    events = PathEvents()
    events.seen("change", "nvme1", "connected")   # the connect
    assert events.reconnects("nvme1") == 0
    events.seen("change", "nvme1", "connected")   # after a path loss
    events.seen("change", "nvme1", "rediscover")
    assert events.reconnects("nvme1") == 1
    events.seen("remove", "nvme1", "")
    events.seen("change", "nvme1", "connected")   # a new controller under the old name
    assert events.reconnects("nvme1") == 0


def test_agent_pool_counts_and_marks_from_a_backend():
    backend = MemoryBackend(pool_bytes=1 * GiB)
    vol = backend.create_volume("pvc-1", 64 * MiB)
    backend.create_volume("pvc-2", 64 * MiB)
    backend.create_snapshot("snap-1", vol.id)
    backend.export_volume(vol.id, [HOST, HOST.replace("host-a", "host-b")])
    m = scrape(AgentCollector(backend, "t1", "pool"))
    labels = {"target": "t1", "pool": "pool"}
    assert value(m, "sluice_agent_pool_size_bytes", **labels) == 1 * GiB
    assert value(m, "sluice_agent_volumes", **labels) == 2
    assert value(m, "sluice_agent_snapshots", **labels) == 1
    assert value(m, "sluice_agent_exports", **labels) == 1
    assert value(m, "sluice_agent_allowed_hosts", **labels) == 2
    assert value(m, "sluice_agent_pool_provisioned_bytes", **labels) == backend.capacity().provisioned_bytes
    assert value(m, "sluice_agent_pool_fill_mark_ratio", mark="high") == 0.85
    assert value(m, "sluice_agent_pool_fill_mark_ratio", mark="critical") == 0.95
    assert value(m, "sluice_agent_pool_up", **labels) == 1


def test_agent_pool_figures_are_cached_not_read_per_scrape():
    backend = MemoryBackend(pool_bytes=1 * GiB)
    calls = []
    real = backend.capacity
    backend.capacity = lambda: calls.append(1) or real()
    collector = AgentCollector(backend, "t1", "pool", ttl=60)
    for _ in range(5):
        scrape(collector)
    assert len(calls) == 1


def test_agent_spdk_iostat_and_target_limits(tmp_path):
    image = "/srv/sluice/spdk.img"
    server = FakeSpdkServer(tmp_path / "spdk.sock", FakeSpdk({image: 4 * GiB}))
    try:
        backend = SpdkBackend(SpdkConfig(socket=server.path, base_bdev="base0", aio_file=image),
                              (Portal("127.0.0.1", "4420"),), tmp_path / "state")
        before = REPLAYS.labels(result="ok")._value.get()
        backend.restore()
        assert REPLAYS.labels(result="ok")._value.get() == before + 1
        vol = backend.create_volume("pvc-s", 64 * MiB)
        backend.set_qos(vol.id, QoS(write_bps=5 * MiB, read_iops=2000))
        backend.export_volume(vol.id, [HOST])
        m = scrape(AgentCollector(backend, "spdk1", "sluice"))
        assert value(m, "sluice_agent_volume_write_bytes_total", volume_id=vol.id) == 0
        limits = {lab["limit"]: v for lab, v in m["sluice_agent_volume_target_limit"] if lab["volume_id"] == vol.id}
        enforced = {k: v for k, v in backend.target_limits(vol.id).items() if v}  # 0: no limit
        assert limits == enforced == {"w_mbytes_per_sec": 5}
    finally:
        server.stop()


def test_replay_failures_are_counted_and_raised():
    before = REPLAYS.labels(result="failed")._value.get()
    with pytest.raises(RuntimeError):
        counted(REPLAYS, lambda: (_ for _ in ()).throw(RuntimeError("target gone")))
    assert REPLAYS.labels(result="failed")._value.get() == before + 1


class _Context:
    def __init__(self, code=None):
        self._code = code

    def code(self):
        return self._code


def test_call_metrics_count_codes_and_time_calls():
    def ok(request, context):
        return "fine"

    def refused(request, context):
        raise RuntimeError("aborted by servicer")

    seen = {}
    for name, fn, ctx in (("Ok", ok, _Context()), ("Refused", refused, _Context(grpc.StatusCode.NOT_FOUND))):
        details = type("D", (), {"method": f"/csi.v1.Controller/{name}"})()
        handler = driver_metrics.CallMetrics().intercept_service(
            lambda _d, fn=fn: grpc.unary_unary_rpc_method_handler(fn), details)
        try:
            seen[name] = handler.unary_unary(None, ctx)
        except RuntimeError:
            seen[name] = "raised"
    assert seen == {"Ok": "fine", "Refused": "raised"}
    m = scrape_default()
    assert value(m, "sluice_csi_calls_total", method="Ok", code="OK") >= 1
    assert value(m, "sluice_csi_calls_total", method="Refused", code="NOT_FOUND") >= 1
    assert value(m, "sluice_csi_call_duration_seconds_count", method="Ok") >= 1


def scrape_default():
    from prometheus_client import REGISTRY

    out: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_orphaned_deletes_are_counted_by_target():
    driver_metrics.orphaned_delete("gone-1")
    assert value(scrape_default(), "sluice_controller_orphaned_deletes_total", target="gone-1") >= 1


def test_targets_up_and_last_seen_from_cached_health():
    class Down(MemoryBackend):
        def health(self):
            from nvme_target.model import Health
            return Health(False, ("unreachable",))

    targets = Targets([Target(TargetConfig(id="a"), MemoryBackend()), Target(TargetConfig(id="b"), Down())])
    for t in targets:
        t.healthy()
    m = scrape(driver_metrics.TargetsCollector(targets))
    assert value(m, "sluice_controller_target_up", target="a") == 1
    assert value(m, "sluice_controller_target_up", target="b") == 0
    assert value(m, "sluice_controller_target_last_seen_timestamp_seconds", target="a") > 1.7e9
    assert [lab["target"] for lab, _ in m["sluice_controller_target_last_seen_timestamp_seconds"]] == ["a"]


def _row(major: int, minor: int, name: str, values: list[int]) -> str:
    return f"{major:4d} {minor:7d} {name} " + " ".join(map(str, values + [0] * (17 - len(values))))


def test_a_multipath_head_counts_its_paths_io():
    """The head nvmeXnY keeps no counters of its own under NVMe multipath: the namespace's
    figures are the sum of its path disks' (nvmeXcZnY), all read from /proc/diskstats."""
    text = "\n".join([
        _row(259, 0, "nvme0n1", [0] * 17),
        _row(259, 1, "nvme0c0n1", [1, 0, 8, 5, 2, 0, 16, 7, 1, 9, 12]),
        _row(259, 2, "nvme0c1n1", [3, 0, 24, 5, 4, 0, 32, 1, 0, 9, 6]),
        _row(259, 3, "nvme0c1n2", [50] * 17),    # another namespace of the same subsystem
        _row(259, 4, "nvme10c0n1", [70] * 17),   # subsystem 10, not 1
        _row(7, 0, "loop0", [7] * 17),
        "   8       0 short 1 2 3",               # a malformed line is skipped
    ]) + "\n"
    stats = node_metrics.diskstats(text)
    stat = node_metrics.disk_stat("nvme0n1", stats)
    assert stat[0] == 4 and stat[2] == 32 and stat[4] == 6 and stat[6] == 48 and stat[8] == 1
    assert node_metrics.disk_stat("nvme0n2", stats)[0] == 50  # its own path, not nvme0n1's
    assert node_metrics.disk_stat("nvme5n1", stats) == [], "no paths and no row: nothing"
    assert node_metrics.disk_stat("loop0", stats)[0] == 7  # not a multipath head: the device's own
    assert node_metrics.disk_stat("nvme10n1", stats)[0] == 70


def test_namespace_facts_are_swept_again_only_after_a_udev_block_event(tmp_path, monkeypatch):
    from csi_driver.node import devices as node_devices
    block = tmp_path / "block"
    (block / "nvme0n1").mkdir(parents=True)
    for name, text in (("uuid", "u-1\n"), ("dev", "259:0\n"), ("size", "2048\n")):
        (block / "nvme0n1" / name).write_text(text)
    monkeypatch.setattr(node_metrics, "SYS_BLOCK", block)
    generation = [1]
    monkeypatch.setattr(node_devices.INDEX, "generation", lambda: generation[0])
    cache = node_metrics.NamespaceCache()
    assert cache.get() == {"u-1": node_metrics.Namespace("nvme0n1", "259:0", 2048 * 512)}
    (block / "nvme0n1" / "size").write_text("4096\n")  # grown: the kernel sends a change event
    assert cache.get()["u-1"].size == 2048 * 512, "no event yet: kept"
    generation[0] = 2
    assert cache.get()["u-1"].size == 4096 * 512
    generation[0] = None  # no udev: every call sweeps
    (block / "nvme0n1" / "size").write_text("8192\n")
    assert cache.get()["u-1"].size == 8192 * 512


def test_a_controllers_nqn_and_address_are_read_once_per_directory(tmp_path, monkeypatch):
    nvme = tmp_path / "nvme"
    def make(name: str, nqn: str, port: str, state: str = "live") -> None:
        (nvme / name).mkdir(parents=True, exist_ok=True)
        (nvme / name / "subsysnqn").write_text(nqn + "\n")
        (nvme / name / "address").write_text(f"traddr=10.0.0.1,trsvcid={port}\n")
        (nvme / name / "state").write_text(state + "\n")
    make("nvme0", "nqn.a", "4420")
    monkeypatch.setattr(fabrics, "SYS_NVME", nvme)
    ctrls = node_metrics.Controllers()
    assert ctrls.by_subsystem() == {"nqn.a": [node_metrics.Path_("nvme0", "live", "10.0.0.1", "4420")]}
    (nvme / "nvme0" / "subsysnqn").write_text("nqn.changed-in-place\n")  # cannot happen: proves the cache
    (nvme / "nvme0" / "state").write_text("connecting\n")
    assert ctrls.by_subsystem() == {"nqn.a": [node_metrics.Path_("nvme0", "connecting", "10.0.0.1", "4420")]}
    (nvme / "nvme0").rename(nvme / "gone")  # deleted, and a new controller takes the name: a new directory
    make("nvme0", "nqn.b", "4421")
    assert ctrls.by_subsystem() == {"nqn.b": [node_metrics.Path_("nvme0", "live", "10.0.0.1", "4421")]}


def test_node_metrics_and_io_max_follow_a_dynamic_ceiling(node_fs, monkeypatch):
    import json as _json

    from csi_driver.node import devices as node_devices
    from csi_driver.node.limits import PodLimits
    root, pod = node_fs
    store = staged(root, {"qos.writeBPS": str(4 * MiB), "qos.class": "bulk"})
    ceiling = QoS(read_bps=MiB, write_bps=MiB)
    (root / "state" / "protection.json").write_text(_json.dumps({"at": 0, "volumes": {"vol-a": {
        "latency_us": 1500.0, "bytes_per_second": 1, "ios_per_second": 1, "ceiling": ceiling.as_params(),
        "reason": "decrease x0.50: why"}}}))
    monkeypatch.setattr(node_devices, "find_by_uuid", lambda uuid: "nvme3n1")
    monkeypatch.setattr(node_devices, "majmin", lambda device: "259:7")
    limits = PodLimits(root / "cgroup", lambda vid: ceiling if vid == "vol-a" else None)
    record = store.find("vol-a")
    assert limits.wanted(record) == QoS(read_bps=MiB, write_bps=MiB)
    limits.apply(record, POD)
    assert (pod / "io.max").read_text() == f"259:7 rbps={MiB} wbps={MiB} riops=max wiops=max"
    (pod / "io.max").write_text(f"259:7 rbps={MiB} wbps={MiB} riops=max wiops=max\n")
    m = scrape(node_metrics.NodeCollector(store, root / "cgroup", PathEvents()))
    assert value(m, "sluice_node_volume_dynamic_ceiling", volume_id="vol-a", limit="wbps") == MiB
    assert value(m, "sluice_node_volume_limit_wanted", volume_id="vol-a", limit="wbps") == MiB
    assert value(m, "sluice_node_pod_limits_in_force", volume_id="vol-a") == 1
    assert value(m, "sluice_node_volume_latency_seconds", volume_id="vol-a") == pytest.approx(0.0015)
    assert PodLimits(root / "cgroup").wanted(record) == QoS(write_bps=4 * MiB)  # no ceiling: the static cap


