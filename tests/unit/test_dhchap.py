"""DH-HMAC-CHAP on the host: the secrets' format and store, the kernel target's
refusal when its kernel has no authentication, the controller asking the target for
keys at publish (the mode in the publish context, never a secret), and the node
fetching them from the target and putting them only into the connect string. The
kernel's side (connect, refuse, restore) is tests/lab/test_dhchap.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from csi_driver import params
from csi_driver.capabilities import Capability
from csi_driver.controller import ControllerService
from csi_driver.node import fabrics, plans
from csi_driver.node.hostid import HostIdentity
from csi_driver.node.service import NodeConfig, NodeService
from csi_driver.node.staging import StagingStore
from csi_driver.targets import Target, TargetConfig, Targets
from nvme_target import dhchap, naming
from nvme_target.dhchap import HostCredentials, SecretStore, new_secret, well_formed
from nvme_target.exports import ExportStore
from nvme_target.model import Portal
from nvme_target.nvmet import Nvmet
from nvme_target.nvmet_exports import NvmetExporter
from sluice_common.errors import FailedPrecondition, InvalidArgument
from tests.fakes.memory_backend import MemoryBackend

HID = "0b5e7d6a-3f1c-4c2a-9a1e-6d0f2b7c8e91"
IDENTITY = HostIdentity(f"nqn.2014-08.org.nvmexpress:uuid:{HID}", HID)
BLOCK = Capability("block", "SINGLE_NODE_WRITER")


def test_secrets_are_dhhc1_with_a_valid_crc_and_never_shown():
    secret = new_secret()
    assert secret.startswith("DHHC-1:00:") and secret.endswith(":") and well_formed(secret)
    broken = secret[:12] + ("A" if secret[12] != "A" else "B") + secret[13:]
    assert not well_formed(broken) and not well_formed("DHHC-1:00:abc:") and not well_formed("")
    creds = HostCredentials.generate("bidirectional")
    assert creds.secret != creds.ctrl_secret and creds.secret not in repr(creds) and creds.ctrl_secret not in repr(creds)
    assert HostCredentials.generate("unidirectional").ctrl_secret == ""
    assert HostCredentials.generate("none") == HostCredentials()
    with pytest.raises(InvalidArgument, match="auth must be one of"):
        HostCredentials.generate("chap")


def test_the_store_is_0600_and_survives_a_restart(tmp_path):
    store = SecretStore(tmp_path / "dhchap.json")
    creds = HostCredentials.generate("bidirectional")
    store.put("v-1", "nqn.a", creds)
    store.put("v-2", "nqn.a", HostCredentials.generate("unidirectional"))
    assert stat.S_IMODE((tmp_path / "dhchap.json").stat().st_mode) == 0o600
    again = SecretStore(tmp_path / "dhchap.json")
    assert again.get("v-1", "nqn.a") == creds and set(again.of_host("nqn.a")) == {"v-1", "v-2"}
    again.drop("v-1", "nqn.a")
    again.drop("v-2")
    assert SecretStore(tmp_path / "dhchap.json").all() == {}


def _nvmet(tmp_path: Path) -> Nvmet:
    for d in ("subsystems", "hosts", "ports"):
        (tmp_path / "nvmet" / d).mkdir(parents=True)
    return Nvmet(tmp_path / "nvmet")


def test_a_kernel_without_target_auth_is_a_clear_error_that_changes_nothing(tmp_path):
    nvmet = _nvmet(tmp_path)  # like 6.1: a host entry has no dhchap_key attribute
    exporter = NvmetExporter(nvmet, ExportStore(tmp_path / "state" / "exports.json"),
                             (Portal("127.0.0.1"),), lambda vol: "/dev/null")
    with pytest.raises(FailedPrecondition, match="nvme.auth: none") as err:
        exporter.add_host(naming.volume_id("pvc-a"), IDENTITY.host_nqn, auth="unidirectional")
    assert "auth:" in str(err.value)
    assert list((tmp_path / "nvmet" / "hosts").iterdir()) == [] and nvmet.subsystems() == []
    assert exporter.store.load() == {} and exporter.secrets.all() == {}


def test_host_keys_go_to_the_host_entry(tmp_path):
    host_dir = tmp_path / "nvmet" / "hosts" / IDENTITY.host_nqn
    host_dir.mkdir(parents=True)
    for attr, value in (("dhchap_key", ""), ("dhchap_ctrl_key", ""), ("dhchap_hash", "hmac(sha256)"),
                        ("dhchap_dhgroup", "null")):
        (host_dir / attr).write_text(value + "\n")
    host = Nvmet(tmp_path / "nvmet").host(IDENTITY.host_nqn)
    assert host.supports_auth()
    creds = HostCredentials.generate("bidirectional")
    host.set_auth(creds.secret, creds.ctrl_secret, dhchap.HASH, dhchap.DHGROUP)
    assert host.get("dhchap_key") == creds.secret and host.get("dhchap_ctrl_key") == creds.ctrl_secret


def test_the_storage_class_mode_is_validated_and_kept():
    assert params.parse({"nvme.auth": "unidirectional"}).as_params() == {"nvme.auth": "unidirectional"}
    assert params.parse({}).auth is None
    with pytest.raises(InvalidArgument, match="parameters: nvme.auth must be one of none, unidirectional"):
        params.parse({"nvme.auth": "yes"})


def _controller(backend: MemoryBackend, default: str = "bidirectional") -> ControllerService:
    return ControllerService(Targets([Target(TargetConfig(id="t"), backend)]), default_auth=default)


@pytest.mark.parametrize("sc, default, mode", [
    ({}, "bidirectional", "bidirectional"), ({}, "none", "none"),
    ({"nvme.auth": "unidirectional"}, "bidirectional", "unidirectional"), ({"nvme.auth": "none"}, "bidirectional", "none"),
])
def test_publish_asks_the_target_for_keys_and_says_only_the_mode(sc, default, mode):
    backend = MemoryBackend()
    ctl = _controller(backend, default)
    vol = ctl.create_volume("pvc-p", 64 << 20, 0, [BLOCK], sc)
    context = ctl.publish(vol.volume_id, IDENTITY.host_nqn, BLOCK, False)
    assert context["nvme.auth"] == mode
    creds = backend.host_credentials(vol.volume_id.split("/", 1)[1], IDENTITY.host_nqn)
    assert creds.mode == mode and (creds.secret != "") == (mode != "none")
    assert not any("DHHC" in v for v in [*context.values(), *vol.context.values()])


def test_a_bad_default_is_refused():
    with pytest.raises(InvalidArgument, match="--default-nvme-auth"):
        _controller(MemoryBackend(), "chap")


def test_the_node_fetches_its_keys_and_puts_them_only_in_the_connect_string(tmp_path):
    backend = MemoryBackend()
    targets = Targets([Target(TargetConfig(id="t"), backend)])
    ctl = ControllerService(targets)
    vol = ctl.create_volume("pvc-n", 64 << 20, 0, [BLOCK], {})
    context = ctl.publish(vol.volume_id, IDENTITY.host_nqn, BLOCK, False)
    node = NodeService(IDENTITY, NodeConfig(state_dir=tmp_path / "state", topology={}), targets=targets)
    plan = plans.plan(vol.volume_id, context, str(tmp_path / "staging"), BLOCK, vol.context)
    assert plan.auth == "bidirectional"
    creds = backend.host_credentials(vol.volume_id.split("/", 1)[1], IDENTITY.host_nqn)
    spec = plans.connect_spec(plan, IDENTITY, creds=node._credentials(plan))
    options = spec.options(spec.portals[0]).split(",")
    assert f"dhchap_secret={creds.secret}" in options and f"dhchap_ctrl_secret={creds.ctrl_secret}" in options
    assert creds.secret not in repr(spec)
    StagingStore(tmp_path / "state").save(plan)
    assert "DHHC" not in json.dumps([p.read_text() for p in tmp_path.rglob("*") if p.is_file()])


def test_a_node_without_targets_cannot_stage_an_authenticated_volume(tmp_path):
    ctx = {"nvme.subnqn": naming.subsystem_nqn("v-1"), "nvme.portals": "10.0.0.5:4420",
           "nvme.nsUUID": naming.namespace_uuid("v-1"), "nvme.auth": "unidirectional"}
    node = NodeService(IDENTITY, NodeConfig(state_dir=tmp_path / "state", topology={}))
    plan = plans.plan("t/v-1", ctx, str(tmp_path / "staging"), BLOCK, {})
    with pytest.raises(FailedPrecondition, match="--targets-config"):
        node._credentials(plan)
    with pytest.raises(InvalidArgument, match="publish_context nvme.auth"):
        plans.plan("t/v-1", {**ctx, "nvme.auth": "maybe"}, str(tmp_path / "staging"), BLOCK, {})


@pytest.mark.parametrize("secret, ctrl, field", [
    ("DHHC-1:00:bm90IGEga2V5:", "", "dhchap_secret"),
    (new_secret() + ",hostnqn=x", "", "dhchap_secret"),
    ("", new_secret(), "dhchap_ctrl_secret needs"),
])
def test_secrets_that_reach_the_option_string_are_checked_and_not_echoed(secret, ctrl, field):
    spec = fabrics.ConnectSpec(naming.subsystem_nqn("v-1"), (fabrics.Portal("10.0.0.5", "4420"),),
                               IDENTITY.host_nqn, HID, dhchap_secret=secret, dhchap_ctrl_secret=ctrl)
    with pytest.raises(InvalidArgument, match=field) as err:
        spec.options(spec.portals[0])
    assert (secret or ctrl) not in str(err.value)


def test_a_refused_key_write_names_the_attribute_not_the_key(tmp_path, monkeypatch):
    host_dir = tmp_path / "nvmet" / "hosts" / IDENTITY.host_nqn
    host_dir.mkdir(parents=True)
    (host_dir / "dhchap_key").write_text("\n")
    host = Nvmet(tmp_path / "nvmet").host(IDENTITY.host_nqn)

    def refuse(self, data, *args, **kwargs):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(Path, "write_text", refuse)
    secret = new_secret()
    with pytest.raises(Exception, match="dhchap_key") as err:
        host.set("dhchap_key", secret)
    assert secret not in str(err.value) and secret.split(":")[2] not in str(err.value)
