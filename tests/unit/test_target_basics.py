"""Host tests of the storage node's pure parts: names, ids, validation, LV tags,
portal specs, agent settings."""

from __future__ import annotations

import uuid
from datetime import datetime, UTC

import pytest

from nvme_target import lvtags, naming, portals, validate
from nvme_target.lvm import LogicalVolume
from nvme_target.model import Portal, Source
from nvme_target.settings import from_args
from sluice_common.errors import InvalidArgument, NotFound


def test_identities_are_deterministic_and_well_formed():
    vid = naming.volume_id("pvc-1")
    assert vid == naming.volume_id("pvc-1") != naming.volume_id("pvc-2")
    assert naming.is_volume_id(vid) and not naming.is_snapshot_id(vid)
    assert naming.is_snapshot_id(naming.snapshot_id("pvc-1"))
    assert naming.subsystem_nqn(vid).startswith("nqn.2026-11.dev.sluice:")
    assert len(naming.subsystem_nqn(vid)) <= 223
    assert uuid.UUID(naming.namespace_uuid(vid)).version == 5
    assert naming.namespace_uuid(vid) != naming.namespace_nguid(vid)
    assert len(naming.serial(vid)) <= 20 and naming.serial(vid).isascii()


@pytest.mark.parametrize("value", ["", "a" * 129, "\x07bell", "tab\x0bv", "\x85"])
def test_bad_names(value):
    with pytest.raises(InvalidArgument, match="name"):
        validate.name(value)


def test_names_allow_unicode_and_common_whitespace():
    assert validate.name("modèle weights\tv2") == "modèle weights\tv2"


@pytest.mark.parametrize("value", [0, -5, True, 1.5, 1 << 51])
def test_bad_sizes(value):
    with pytest.raises(InvalidArgument, match="size_bytes"):
        validate.size(value)


def test_metadata_limits():
    assert validate.metadata({"a": "b"}) == {"a": "b"}
    with pytest.raises(InvalidArgument):
        validate.metadata({"k": "v" * 600})
    with pytest.raises(InvalidArgument):
        validate.metadata({"": "v"})


def test_foreign_ids_are_not_found():
    for bad in ("", "v-123", "s-" + "0" * 32, "../etc/passwd", "v-" + "G" * 32):
        with pytest.raises(NotFound):
            validate.volume_id(bad)


@pytest.mark.parametrize("nqn", ["host1", "nqn.with space", "nqn.a/b", "nqn." + "x" * 250])
def test_bad_host_nqns(nqn):
    with pytest.raises(InvalidArgument, match="NQN"):
        validate.host_nqn(nqn)


def lv(name: str, tags: list[str], size: int = 8 << 20) -> LogicalVolume:
    return LogicalVolume(name=name, size=size, tags=tuple(tags), segtype="thin", pool="pool", origin="",
                         data_percent=0.0, metadata_percent=0.0, metadata_size=0,
                         created_at=datetime(2026, 11, 24, tzinfo=UTC), active=True, extent_size=4 << 20)


def test_lv_tags_round_trip_a_volume():
    name, meta, src = "pvc-é 1", {"qos.readIOPS": "100", "pool": "a"}, Source("snapshot", "s-" + "a" * 32)
    tags = lvtags.volume_tags(name, meta, src)
    assert all(set(t) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
               for t in tags)
    vol = lvtags.to_volume(lv("v-x", tags))
    assert (vol.name, dict(vol.metadata), vol.source, vol.size_bytes) == (name, meta, src, 8 << 20)
    assert lvtags.to_snapshot(lv("v-x", tags)) is None


def test_lv_tags_round_trip_a_snapshot():
    snap = lvtags.to_snapshot(lv("s-y", lvtags.snapshot_tags("snap", "v-" + "b" * 32)))
    assert (snap.name, snap.source_volume_id, snap.ready) == ("snap", "v-" + "b" * 32, True)


def test_untagged_lvs_are_not_sluice_objects():
    assert lvtags.to_volume(lv("root", [])) is None and lvtags.to_volume(None) is None


@pytest.mark.parametrize("spec, portal", [
    ("10.0.0.5:4420", Portal("10.0.0.5", "4420", "ipv4")),
    ("10.0.0.5", Portal("10.0.0.5", "4420", "ipv4")),
    ("[fd00::5]:4421", Portal("fd00::5", "4421", "ipv6")),
    ("lo:4430", Portal("127.0.0.1", "4430", "ipv4")),
])
def test_portal_specs(spec, portal):
    assert portals.parse(spec) == portal


@pytest.mark.parametrize("spec", ["", "10.0.0.5:0", "10.0.0.5:99999", "no-such-nic0:4420"])
def test_bad_portal_specs(spec):
    with pytest.raises(InvalidArgument):
        portals.parse(spec)


def test_settings_defaults_and_topology():
    s = from_args(["--vg", "vg0", "--topology", "csi.sluice.dev/zone=a", "--pv", "/dev/sdb"])
    assert (s.vg, s.pool, s.pvs, s.portals) == ("vg0", "pool", ("/dev/sdb",), ("127.0.0.1:4420",))
    assert s.topology == {"csi.sluice.dev/fabric": "default", "csi.sluice.dev/zone": "a"}


@pytest.mark.parametrize("argv, message", [
    (["--listen", "0.0.0.0:7000"], "not a loopback address"),
    (["--listen", "10.1.2.3:7000", "--tls-cert", "/c"], "go together"),
    (["--topology", "zone"], "KEY=VALUE"),
    (["--socket", "", "--listen", ""], "give --socket, --listen"),
    (["--overcommit-ratio", "0"], "overcommit"),
])
def test_settings_refusals(argv, message):
    with pytest.raises(InvalidArgument, match=message):
        from_args(argv)


def test_grpc_listen_specs():
    assert portals.grpc_address("lo:7000") == "127.0.0.1:7000"
    assert portals.grpc_address("[::1]:7000") == "[::1]:7000"
    assert portals.is_loopback("lo") and not portals.is_loopback("10.0.0.1")
    assert from_args(["--listen", "lo:7000"]).listen == "lo:7000"


def test_settings_allow_explicit_insecure_and_loopback():
    assert from_args(["--listen", "127.0.0.1:7000"]).listen == "127.0.0.1:7000"
    assert from_args(["--listen", "0.0.0.0:7000", "--insecure-listen"]).insecure_listen
