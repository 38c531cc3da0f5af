"""Host tests of the node's plain parts. Filesystem probing and mkfs run the real
tools on image files (no kernel needed for that); everything that needs nvme, mounts
or udev is in tests/lab."""

from __future__ import annotations

import os
import subprocess

import pytest

from csi_driver.node import filesystems, hostid, mounts
from csi_driver.node.fabrics import ConnectSpec, Portal, parse_portals
from csi_driver.node.staging import StagingRecord, StagingStore, record_path
from sluice_common.errors import FailedPrecondition, InvalidArgument


HID = "0b5e7d6a-3f1c-4c2a-9a1e-6d0f2b7c8e91"


def test_connect_options_carry_identity_and_tunables():
    spec = ConnectSpec(subnqn="nqn.2026-11.dev.sluice:vol:v-1", portals=(Portal("10.0.0.5", "4420"),),
                       host_nqn=f"nqn.2014-08.org.nvmexpress:uuid:{HID}", host_id=HID, ctrl_loss_tmo=30,
                       reconnect_delay=3, keep_alive_tmo=7, nr_io_queues=2, host_iface="storage0",
                       host_traddr="10.0.0.9")
    opts = dict(kv.split("=", 1) for kv in spec.options(spec.portals[0]).split(","))
    assert opts == {"transport": "tcp", "traddr": "10.0.0.5", "trsvcid": "4420",
                    "nqn": "nqn.2026-11.dev.sluice:vol:v-1", "hostnqn": f"nqn.2014-08.org.nvmexpress:uuid:{HID}",
                    "hostid": HID, "ctrl_loss_tmo": "30", "reconnect_delay": "3", "keep_alive_tmo": "7",
                    "nr_io_queues": "2", "host_iface": "storage0", "host_traddr": "10.0.0.9"}


def test_portal_lists():
    assert parse_portals("10.0.0.5:4420,[fd00::1]:4421") == (Portal("10.0.0.5", "4420"), Portal("fd00::1", "4421"))
    for bad in ("", "10.0.0.5", "10.0.0.5:x"):
        with pytest.raises(InvalidArgument, match="nvme.portals"):
            parse_portals(bad)


def test_host_identity_is_created_once_and_kept(tmp_path):
    first = hostid.load_or_create(tmp_path / "nvme")
    assert first.host_nqn == f"nqn.2014-08.org.nvmexpress:uuid:{first.host_id}"
    assert hostid.load_or_create(tmp_path / "nvme") == first
    (tmp_path / "given").mkdir()
    (tmp_path / "given/hostnqn").write_text("nqn.2014-08.org.nvmexpress:uuid:given\n")
    (tmp_path / "given/hostid").write_text("2b5f3c3e-8f5a-4c4e-9d0e-2f0f6a1b2c3d\n")
    assert hostid.load_or_create(tmp_path / "given").host_nqn == "nqn.2014-08.org.nvmexpress:uuid:given"
    (tmp_path / "given/hostnqn").write_text("not an nqn\n")
    with pytest.raises(InvalidArgument):
        hostid.load_or_create(tmp_path / "given")


def test_staging_records_round_trip_and_index(tmp_path):
    store = StagingStore(tmp_path / "state")
    staging = str(tmp_path / "kubelet/vol1/globalmount")
    rec = StagingRecord("t/v-1", staging, "nqn.x", "uuid-1", "127.0.0.1:4420", "mount", "xfs",
                        context={"qos.readIOPS": "100"})
    store.save(rec.with_publication("/pods/a").with_publication("/pods/b"))
    assert record_path(staging).name == "globalmount.sluice.json"
    loaded = store.load(staging)
    assert loaded.publications == ("/pods/a", "/pods/b") and loaded.context == {"qos.readIOPS": "100"}
    assert store.find("t/v-1") == loaded and store.all() == [loaded]
    store.save(loaded.without_publication("/pods/a"))
    assert store.find("t/v-1").publications == ("/pods/b",)
    store.remove(loaded)
    assert store.find("t/v-1") is None and store.all() == [] and not record_path(staging).exists()


def _age_index(store: StagingStore, seconds: float = 10) -> None:
    """Make the index folder look changed `seconds` ago (past the racy window)."""
    st = store.index.stat()
    os.utime(store.index, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def test_all_reads_the_records_again_only_when_the_index_moved(tmp_path, monkeypatch):
    state = tmp_path / "state"
    store, other = StagingStore(state), StagingStore(state)  # `other`: another process's view
    rec = StagingRecord("t/v-1", str(tmp_path / "a/globalmount"), "nqn.x", "uuid-1", "127.0.0.1:4420", "block")
    store.save(rec)
    loads = []
    real_load = StagingStore.load
    monkeypatch.setattr(StagingStore, "load", lambda self, path: loads.append(path) or real_load(self, path))
    assert store.all() == [rec] and len(loads) == 1  # just changed: not trusted, read
    assert store.all() == [rec] and len(loads) == 2  # still inside the racy window: read again
    _age_index(store)
    assert store.all() == [rec] and len(loads) == 3
    assert store.all() == [rec] and store.all() == [rec] and len(loads) == 3  # unchanged: from memory
    other.save(rec.with_publication("/pods/p", "uid-1"))  # a change through another store object
    assert store.all()[0].pods == {"/pods/p": "uid-1"}
    _age_index(store)
    other.remove(store.all()[0])
    assert store.all() == []


def test_mountinfo_is_parsed_with_escapes(monkeypatch):
    sample = ("36 35 98:0 / /mnt/with\\040space rw,noatime shared:1 - ext4 /dev/nvme0n1 rw\n"
              "37 35 98:1 / /mnt/ro ro,relatime - xfs /dev/nvme1n1 ro\n")
    monkeypatch.setattr(mounts.Path, "read_text", lambda self: sample)
    found = mounts.entries()
    assert found[0].mountpoint == "/mnt/with space" and found[0].majmin == "98:0" and found[0].fs_type == "ext4"
    assert found[1].read_only and not found[0].read_only


def test_mount_options_become_mount2_flags_or_go_to_mount8():
    ro_noload = mounts.syscall_options(("noatime", "ro", "noload"))
    assert ro_noload == (mounts.MS_NOATIME | mounts.MS_RDONLY, "noload")
    assert mounts.syscall_options(()) == (0, "")
    assert mounts.syscall_options(("ro", "rw", "nodev", "dev", "nosuid")) == (mounts.MS_NOSUID, ""), \
        "the later word wins, as in mount(8)"
    assert mounts.syscall_options(("nouuid", "discard", "defaults")) == (0, "nouuid,discard")
    for userspace_or_unknown in ("_netdev", "x-systemd.automount", "errors=remount-ro", "data=journal", "bind"):
        assert mounts.syscall_options(("ro", userspace_or_unknown)) is None, userspace_or_unknown


def test_a_refused_mount2_names_the_source_target_and_errno(tmp_path):
    # not root on a non-device: the kernel refuses (EPERM unprivileged, ENOTBLK/ENOENT as root)
    with pytest.raises(mounts.BackendFailure) as caught:
        mounts.mount(str(tmp_path / "no-such-device"), str(tmp_path), "ext4", ("ro", "noload"))
    assert str(tmp_path / "no-such-device") in str(caught.value) and caught.value.details["errno"]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "320M", str(path)], check=True)
    return str(path)


def test_mkfs_only_on_a_blank_device(image):
    assert filesystems.probe(image) == {}
    assert filesystems.ensure(image, "ext4") is True
    assert filesystems.probe(image)["TYPE"] == "ext4"
    assert filesystems.ensure(image, "ext4") is False, "a device that already holds ext4 is used as it is"
    with pytest.raises(FailedPrecondition, match="holds ext4"):
        filesystems.ensure(image, "xfs")


def test_partitioned_device_is_never_formatted(image):
    subprocess.run(["sfdisk", "-q", image], input="label: gpt\n,\n", text=True, check=True)
    with pytest.raises(FailedPrecondition, match="partition table"):
        filesystems.ensure(image, "xfs")


def test_in_process_probe_agrees_with_blkid(image):
    assert filesystems.probe(image) == {}
    subprocess.run(["mkfs.xfs", "-q", image], check=True)
    found = filesystems.probe(image)
    tool = dict(line.split("=", 1) for line in subprocess.run(
        ["blkid", "-p", "-o", "export", image], capture_output=True, text=True, check=True).stdout.split())
    assert found["TYPE"] == tool["TYPE"] == "xfs" and found["UUID"] == tool["UUID"]
