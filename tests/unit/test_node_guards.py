"""Host tests of the node's guards: what may reach the kernel's option strings, unstage
without a staging record, supervised background work, and the target's view of a volume
arriving on the WatchVolumes stream (in-process memory backend). The kernel side of all
of this is proven in tests/lab/test_node_guards.py."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from csi_driver import ids
from csi_driver.capabilities import Capability
from csi_driver.node import devices, fabrics, health, inputs, mounts, plans, supervise
from csi_driver.node import readonly as ro
from csi_driver.node.hostid import HostIdentity
from csi_driver.node.service import NodeConfig, NodeService
from csi_driver.node.staging import StagingRecord
from csi_driver.targets import Target, TargetConfig, Targets
from nvme_target import naming
from nvme_target.model import QoS
from sluice_common.errors import FailedPrecondition, InvalidArgument
from tests.conformance.client import MiB
from tests.fakes.memory_backend import MemoryBackend

HID = "0b5e7d6a-3f1c-4c2a-9a1e-6d0f2b7c8e91"
IDENTITY = HostIdentity(f"nqn.2014-08.org.nvmexpress:uuid:{HID}", HID)
VOL = "t1/" + naming.volume_id("pvc-guards")
GOOD = {"nvme.subnqn": naming.subsystem_nqn(naming.volume_id("pvc-guards")), "nvme.portals": "10.0.0.5:4420",
        "nvme.nsUUID": naming.namespace_uuid(naming.volume_id("pvc-guards")), "readonly": "false"}
MOUNT = Capability("mount", "SINGLE_NODE_WRITER", "ext4")


@pytest.fixture
def node(tmp_path, monkeypatch):
    written: list[str] = []
    monkeypatch.setattr(fabrics, "_write_connect", lambda spec, portal: written.append(spec.options(portal)))
    service = NodeService(IDENTITY, NodeConfig(state_dir=tmp_path / "state", topology={}))
    service.written = written
    return service


@pytest.mark.parametrize("context, field", [
    ({"nvme.subnqn": GOOD["nvme.subnqn"] + ",hostnqn=nqn.2014-08.org.evil:x"}, "nvme.subnqn"),
    ({"nvme.subnqn": GOOD["nvme.subnqn"] + "\nnqn=x"}, "nvme.subnqn"),
    ({"nvme.subnqn": "nqn.2026-11.dev.sluice:vol=x"}, "nvme.subnqn"),
    ({"nvme.subnqn": "nqn." + "a" * 230}, "nvme.subnqn"),
    ({"nvme.portals": "10.0.0.5:4420,ctrl_loss_tmo=1"}, "nvme.portals"),
    ({"nvme.portals": "10.0.0.5=x:4420"}, "nvme.portals"),
    ({"nvme.portals": "10.0.0.5:4420\nnqn=x"}, "nvme.portals"),
    ({"nvme.portals": "10.0.0.5:70000"}, "nvme.portals"),
    ({"nvme.portals": "storage.example:4420"}, "nvme.portals"),
    ({"nvme.nsUUID": "not-a-uuid,x=1"}, "nvme.nsUUID"),
])
def test_injection_in_the_publish_context_is_refused_before_any_connect(node, tmp_path, context, field):
    with pytest.raises(InvalidArgument, match=field):
        node.stage(VOL, {**GOOD, **context}, str(tmp_path / "staging"), MOUNT, {})
    assert node.written == []


@pytest.mark.parametrize("tunables, field", [
    ({"nvme.ctrlLossTmo": "5,hostnqn=x"}, "nvme.ctrlLossTmo"),
    ({"nvme.ctrlLossTmo": "0"}, "nvme.ctrlLossTmo"),
    ({"nvme.ctrlLossTmo": "-2"}, "nvme.ctrlLossTmo"),
    ({"nvme.ctrlLossTmo": "3601"}, "nvme.ctrlLossTmo"),
    ({"nvme.keepAliveTmo": "5\n"}, "nvme.keepAliveTmo"),
    ({"nvme.nrIoQueues": "1000"}, "nvme.nrIoQueues"),
    ({"nvme.reconnectDelay": "=1"}, "nvme.reconnectDelay"),
    ({"nvme.ctrlLosTmo": "5"}, "nvme.ctrlLosTmo"),
])
def test_tunables_are_range_checked_on_the_node(node, tmp_path, tunables, field):
    with pytest.raises(InvalidArgument, match=field):
        node.stage(VOL, GOOD, str(tmp_path / "staging"), MOUNT, tunables)
    assert node.written == []


def test_reconnect_forever_is_accepted_and_reaches_the_option_string(node):
    assert inputs.tunables({"nvme.ctrlLossTmo": "-1", "nvme.reconnectDelay": "5"}) == {
        "nvme.ctrlLossTmo": -1, "nvme.reconnectDelay": 5}
    plan = plans.plan(VOL, GOOD, "/x/staging", MOUNT, {"nvme.ctrlLossTmo": "-1"})
    spec = plans.connect_spec(plan, IDENTITY)
    assert "ctrl_loss_tmo=-1" in spec.options(spec.portals[0]).split(",")


@pytest.mark.parametrize("flag", ["noatime,rw", "rw", "remount", "a b", "ro\n", "load", "data=journal,x"])
def test_mount_flags_that_could_add_or_undo_options_are_refused(node, tmp_path, flag):
    cap = replace(MOUNT, mount_flags=("noatime", flag))
    with pytest.raises(InvalidArgument, match="mount_flags"):
        node.stage(VOL, GOOD, str(tmp_path / "staging"), cap, {})
    assert node.written == []


def test_read_only_mount_options_never_replay_a_journal():
    from csi_driver.node import filesystems

    assert filesystems.mount_options("ext4", ("noatime",), True) == ("noatime", "ro", "noload")
    assert filesystems.mount_options("xfs", (), True) == ("ro", "norecovery")
    assert filesystems.mount_options("ext4", ("noatime",), False) == ("noatime",)


def test_a_read_only_use_of_a_blank_volume_is_refused_naming_it(node, tmp_path, monkeypatch):
    from csi_driver.node import devices, filesystems

    monkeypatch.setattr(devices, "majmin", lambda dev: "259:1")
    monkeypatch.setattr(filesystems, "probe", lambda dev: {})
    monkeypatch.setattr(filesystems, "ensure", lambda *a: pytest.fail("a read-only use must not format"))
    monkeypatch.setattr(mounts, "mount", lambda *a: pytest.fail("nothing may be mounted"))
    plan = plans.plan(VOL, {**GOOD, "readonly": "true"}, str(tmp_path / "staging"), MOUNT, {})
    assert plan.read_only
    with pytest.raises(FailedPrecondition, match=VOL):
        node._mount_staging(plan, "nvme9n1")


def test_unstage_without_a_record_disconnects_by_the_derived_nqn(node, tmp_path, monkeypatch):
    gone: list[str] = []
    monkeypatch.setattr(fabrics, "disconnect", lambda nqn, host=None: gone.append(nqn) or [])
    monkeypatch.setattr(mounts, "at", lambda path: None)
    monkeypatch.setattr(ro, "layers_of", lambda vid: [])
    node.unstage(VOL, str(tmp_path / "staging"))
    assert gone == [naming.subsystem_nqn(ids.split_volume(VOL)[1])]
    gone.clear()
    node.unstage("foreign-volume", str(tmp_path / "staging"))  # cannot be ours: nothing to disconnect
    assert gone == []


def test_background_loops_log_and_go_on(caplog):
    calls = []
    stopped = threading.Event()

    def body():
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("surprise")
        stopped.set()

    supervise.forever("test-loop", body, 0.01, stopped).join(timeout=10)
    assert len(calls) == 3


class ConditionBackend(MemoryBackend):
    """The memory backend with a settable Volume.condition (the agent's side is another
    issue's work; the node only consumes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.conditions: dict[str, str] = {}

    def get_volume(self, volume_id):
        return replace(super().get_volume(volume_id), condition=self.conditions.get(volume_id, ""))


def test_the_targets_view_of_a_volume_reaches_the_volume_stats(tmp_path, monkeypatch):
    backend = ConditionBackend()
    vol = backend.create_volume("pvc-cond", 64 * MiB)
    backend.conditions[vol.id] = "pool is 97% full"
    targets = Targets([Target(TargetConfig("t1"), backend)])
    node = NodeService(IDENTITY, NodeConfig(state_dir=tmp_path / "state", topology={}), targets=targets)
    volume_id = ids.join("t1", vol.id)
    staging = tmp_path / "staging"
    staging.mkdir()
    node.store.save(StagingRecord(volume_id=volume_id, staging_path=str(staging), subnqn="nqn.x:y", ns_uuid=HID,
                                  portals="10.0.0.5:4420", access_type="mount", fs_type="ext4"))
    for i, foreign in enumerate(("other/v-" + "0" * 32, "not-ours", "t1/not-a-volume")):  # never kill the watch
        node.store.save(StagingRecord(volume_id=foreign, staging_path=str(tmp_path / f"s{i}"),
                                      subnqn="nqn.x:z", ns_uuid=HID, portals="10.0.0.5:4420", access_type="block"))
    monkeypatch.setattr(health, "_connection", lambda record, host: "")
    monkeypatch.setattr(health, "_staging", lambda record: "")
    monkeypatch.setattr(health, "_filesystem", lambda record, path: "")
    node.start()
    try:
        stats = _wait(lambda: (s := node.stats(volume_id, str(staging))).abnormal and s)
        assert stats.message == "the target reports: pool is 97% full"
        backend.conditions[vol.id] = ""
        backend.set_qos(vol.id, QoS(read_iops=100))  # the agent sends the volume again
        _wait(lambda: not node.stats(volume_id, str(staging)).abnormal)
        assert node.stats(volume_id, str(staging)).message == health.HEALTHY
    finally:
        node.stop()


def _wait(probe, timeout: float = 30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_staging_records_are_found_when_one_is_damaged(tmp_path):
    node = NodeService(IDENTITY, NodeConfig(state_dir=tmp_path / "state", topology={}))
    node.store.save(StagingRecord(volume_id=VOL, staging_path=str(tmp_path / "a"), subnqn="n", ns_uuid=HID,
                                  portals="p", access_type="block"))
    (node.store.index / "broken.json").write_text("{not json")
    assert [r.volume_id for r in node.store.all()] == [VOL]
    assert Path(tmp_path / "a.sluice.json").exists()


def test_device_lookups_do_not_sweep_sysfs_per_volume(tmp_path, monkeypatch):
    from csi_driver.node import devices

    for i, ns in enumerate(("u-1", "u-2", "u-3")):
        disk = tmp_path / f"nvme{i}n1"
        disk.mkdir()
        (disk / "uuid").write_text(ns + "\n")
        (disk / "dev").write_text(f"259:{i}\n")
    monkeypatch.setattr(devices, "SYS_BLOCK", tmp_path)
    sweeps = []
    real_sweep = devices._sweep
    monkeypatch.setattr(devices, "_sweep", lambda: sweeps.append(1) or real_sweep())
    index = devices.DeviceIndex()
    index._observer = object()  # as if udev events were followed
    assert [index.find(u) for u in ("u-1", "u-2", "u-3")] == ["nvme0n1", "nvme1n1", "nvme2n1"]
    for _ in range(10):
        assert index.find("u-2") == "nvme1n1" and index.find("gone") is None
    assert len(sweeps) == 2, "one sweep fills the index, one for the first miss; hits and misses are cached"
    index.changed()  # udev: a block device came or went
    assert index.find("gone") is None and len(sweeps) == 3
    assert index.find("gone", fresh=True) is None and len(sweeps) == 4


def test_the_limits_sync_runs_in_full_only_when_something_may_have_changed(tmp_path, monkeypatch):
    # Every 2 s the sync asks whether anything could have moved an io.max line: a udev block
    # event (a reconnect), a changed staging record, a volume skipped last time. Then a full
    # pass; else every full_sync_interval a verify pass (the lines last written re-read);
    # else nothing (it looked everything up every 2 s: a third of a core with 50 volumes).
    node = NodeService(IDENTITY, NodeConfig(state_dir=tmp_path / "state", topology={},
                                            cgroup_root=tmp_path / "no-cgroups", full_sync_interval=30))
    events, stamp, clock, passes, outcome = [7], [5], [1000.0], [], [True]
    monkeypatch.setattr(devices.INDEX, "generation", lambda: events[0])
    monkeypatch.setattr(node.store, "stamp", lambda: stamp[0])
    monkeypatch.setattr("csi_driver.node.service.time.monotonic", lambda: clock[0])
    monkeypatch.setattr(node, "_sync_all",
                        lambda verify_only, stamp: passes.append("verify" if verify_only else "full") or outcome[0])

    node.sync_limits()
    node.sync_limits()
    assert passes == ["full"], "nothing changed: no second pass"
    events[0] = 8  # a block device came or went
    node.sync_limits()
    node.sync_limits()
    assert passes == ["full"] * 2
    stamp[0] = 6  # a staging record was written
    node.sync_limits()
    assert passes == ["full"] * 3
    clock[0] += 30
    node.sync_limits()
    node.sync_limits()
    assert passes == ["full"] * 3 + ["verify"], "every full_sync_interval: the written lines re-read"
    outcome[0] = False  # a CSI call held a volume: skipped
    events[0] = 9
    node.sync_limits()
    outcome[0] = True
    node.sync_limits()
    assert passes[-2:] == ["full", "full"], "a pass that skipped a busy volume is followed by another"
    node.sync_limits()
    assert len(passes) == 6
    events[0] = None  # no udev events to go by: every round runs in full
    node.sync_limits()
    node.sync_limits()
    assert passes[-2:] == ["full", "full"]


def test_verify_rereads_only_the_lines_it_wrote_and_repairs_a_changed_one(tmp_path, monkeypatch):
    from csi_driver.node import limits as node_limits
    cg = tmp_path / "cgroup"
    pod_uid = "0f6c2a9e-2d43-4f1b-9c62-7f1d0e4b5a11"
    pod = cg / "kubepods.slice/kubepods-burstable.slice" / f"kubepods-burstable-pod{pod_uid.replace('-', '_')}.slice"
    pod.mkdir(parents=True)
    (cg / "cgroup.controllers").write_text("cpu io memory pids\n")
    (cg / "cgroup.subtree_control").write_text("")
    monkeypatch.setattr(devices, "find_by_uuid", lambda uuid: "nvme3n1")
    monkeypatch.setattr(devices, "majmin", lambda device: "259:7")
    limits = node_limits.PodLimits(cg)
    record = StagingRecord("t/v-1", str(tmp_path / "s"), "nqn.x", "u-1", "127.0.0.1:4420", "block",
                           qos={"qos.writeBPS": str(4 * MiB)}).with_publication("/pods/p", pod_uid)
    limits.sync(record)
    assert f"wbps={4 * MiB}" in (pod / "io.max").read_text()
    lookups = []
    monkeypatch.setattr(devices, "find_by_uuid", lambda uuid: lookups.append(uuid) or "nvme3n1")
    limits.verify(record)
    assert lookups == [], "an unchanged line is re-read, nothing looked up"
    (pod / "io.max").write_text("259:7 rbps=max wbps=max riops=max wiops=max\n")  # someone else's write
    limits.verify(record)
    assert lookups == ["u-1"] and f"wbps={4 * MiB}" in (pod / "io.max").read_text()
