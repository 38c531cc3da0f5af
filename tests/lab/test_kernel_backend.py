"""KernelBackend on the real kernel: the whole Backend contract on LVM thin + nvmet,
then what only a real data path can show (data identity of clones over NVMe/TCP,
online expansion seen by the host, host-NQN access control)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from nvme_target.model import Source
from tests.contract.auth_contract import AuthContract
from tests.contract.backend_contract import BackendContract, GroupSnapshotContract
from tests.lab.kernel import (
    NVMET, connect, controllers_for, disconnect, lvm, lvs_json, new_host_nqn, read_block, wait_for,
    write_block,
)

pytestmark = pytest.mark.lab
MiB = 1 << 20


class TestKernelBackendContract(BackendContract, GroupSnapshotContract, AuthContract):
    @pytest.fixture
    def backend(self, kernel_backend):
        return kernel_backend


def test_lv_tags_hold_the_record(kernel_backend):
    vol = kernel_backend.create_volume("pvc-tags", 8 * MiB, {"qos.writeBPS": "1Gi"})
    lv = next(lv for lv in lvs_json(kernel_backend.lvm.vg) if lv["lv_name"] == vol.id)
    assert lv["segtype"] == "thin"
    # a new backend object (a restarted agent with no state file) rebuilds the same record
    from nvme_target.kernel_backend import KernelBackend
    fresh = KernelBackend(kernel_backend.lvm.vg, kernel_backend.lvm.pool, kernel_backend.portals(),
                          Path("/tmp/empty-state-dir"))
    assert fresh.get_volume(vol.id) == vol


def test_snapshot_is_read_only_and_inactive(kernel_backend):
    vol = kernel_backend.create_volume("pvc-ro", 16 * MiB)
    snap = kernel_backend.create_snapshot("snap-ro", vol.id)
    attr = lvm("lvs", "--noheadings", "-o", "lv_attr", f"{kernel_backend.lvm.vg}/{snap.id}").stdout.strip()
    assert attr[1] == "r", f"snapshot permission should be read-only: {attr}"
    assert attr[4] != "a", f"snapshot should stay inactive: {attr}"


def test_clone_of_snapshot_has_the_snapshot_data_over_nvme_tcp(kernel_backend):
    host = new_host_nqn()
    vol = kernel_backend.create_volume("pvc-data", 64 * MiB)
    export = kernel_backend.export_volume(vol.id, [host])
    _, device = connect(export, host)
    pattern = os.urandom(8 * MiB)
    write_block(device, pattern)
    want = hashlib.sha256(pattern).hexdigest()
    snap = kernel_backend.create_snapshot("snap-data", vol.id)
    write_block(device, os.urandom(8 * MiB))  # the origin moves on; the snapshot must not
    disconnect(export)

    clone = kernel_backend.create_volume("pvc-data-clone", 64 * MiB, source=Source("snapshot", snap.id))
    kernel_backend.delete_snapshot(snap.id)  # thin clones keep their blocks without the snapshot
    clone_export = kernel_backend.export_volume(clone.id, [host])
    _, clone_device = connect(clone_export, host)
    got = hashlib.sha256(read_block(clone_device, len(pattern))).hexdigest()
    disconnect(clone_export)
    assert got == want


def test_online_expand_reaches_the_connected_host(kernel_backend):
    host = new_host_nqn()
    vol = kernel_backend.create_volume("pvc-grow", 64 * MiB)
    export = kernel_backend.export_volume(vol.id, [host])
    _, device = connect(export, host)
    disk = Path("/sys/block") / Path(device).name
    assert int((disk / "size").read_text()) * 512 == vol.size_bytes
    grown = kernel_backend.expand_volume(vol.id, 192 * MiB)
    wait_for(lambda: int((disk / "size").read_text()) * 512 == grown.size_bytes, 30,
             "the host to see the new size")
    disconnect(export)


def test_access_control_follows_the_host_list(kernel_backend):
    allowed, stranger = new_host_nqn(), new_host_nqn()
    vol = kernel_backend.create_volume("pvc-acl", 16 * MiB)
    export = kernel_backend.export_volume(vol.id, [allowed])
    sub = NVMET / "subsystems" / export.subsystem_nqn
    assert (sub / "attr_allow_any_host").read_text().strip() == "0"
    assert (sub / "namespaces/1/device_uuid").read_text().strip() == export.namespace_uuid
    assert (sub / "namespaces/1/device_nguid").read_text().strip() == export.namespace_nguid
    connect(export, allowed)
    disconnect(export)
    with pytest.raises(OSError):
        connect(export, stranger)
    kernel_backend.remove_host(vol.id, allowed)
    with pytest.raises(OSError):
        connect(export, allowed)
    assert controllers_for(export.subsystem_nqn) == []
    assert not (NVMET / "hosts" / allowed).exists(), "an unreferenced host entry is pruned"


def test_create_finds_an_lv_made_behind_its_back(kernel_backend):
    from nvme_target import lvtags, naming
    kernel_backend.list_volumes()  # the agent's view is now seeded without the LV below
    vol_id = naming.volume_id("pvc-behind")
    tags = [arg for tag in lvtags.volume_tags("pvc-behind", {}, None) for arg in ("--addtag", tag)]
    lvm("lvcreate", "-q", "-V", "8m", "-T", f"{kernel_backend.lvm.vg}/{kernel_backend.lvm.pool}",
        "-n", vol_id, "-kn", *tags)
    vol = kernel_backend.create_volume("pvc-behind", 8 * MiB)
    assert vol.id == vol_id and vol.size_bytes == 8 * MiB
    assert [v.id for v in kernel_backend.list_volumes()] == [vol_id]
