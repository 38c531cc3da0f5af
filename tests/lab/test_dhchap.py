"""DH-HMAC-CHAP on every export, and who may ask for the secrets, on the real kernel
(needs NVMe target authentication: Debian trixie's 6.12, the lab's default kernel).

1. The kernel backend and the kernel initiator, through Sluice's own connect code: the
   published host with its secrets connects; without a secret, with a wrong one, with
   another volume's, or with a wrong controller key (bidirectional: the host refuses
   the target) it is refused, the kernel's reason in the error; a connected host whose
   target is wiped (a reboot) reconnects with its secret once a restarted backend
   restores the keys; after unpublish and a new publish the old secret is refused and
   the new one connects.
2. The deployment's shape: an agent serving mTLS with role certificates, a controller
   and a node plugin each with its own certificate (the node's bound to its host NQN):
   the node fetches its credentials at stage and writes through them, and its
   certificate cannot administer; no secret appears in any log, response or state file
   but the target's own (0600).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import grpc
import pytest

from csi_driver.node import fabrics
from nvme_target.agent.client import AgentClient, TlsFiles
from nvme_target.dhchap import new_secret
from nvme_target.kernel_backend import KernelBackend
from nvme_target.model import Portal, QoS
from sluice_common import certs
from sluice_common.errors import FailedPrecondition, PermissionDenied
from tests.conformance.client import Csi, block_cap
from tests.lab.attach import KUBELET, Attached
from tests.lab.conftest import SCRATCH_DISK
from tests.lab.kernel import (
    block_device_with_uuid, controllers_for, disconnect, new_host_nqn, read_block, wait_for, wipe_configfs,
    write_block,
)
from tests.lab.processes import AgentProcess, ControllerProcess, NodeProcess

pytestmark = pytest.mark.lab
MiB = 1 << 20


def spec(export, host_nqn: str, secret: str = "", ctrl_secret: str = "", loss: int = 5) -> fabrics.ConnectSpec:
    portal = export.portals[0]
    return fabrics.ConnectSpec(export.subsystem_nqn, (fabrics.Portal(portal.traddr, portal.trsvcid),), host_nqn,
                               host_nqn.rsplit(":", 1)[1], ctrl_loss_tmo=loss, reconnect_delay=1, nr_io_queues=1,
                               dhchap_secret=secret, dhchap_ctrl_secret=ctrl_secret)


def refused(export, host_nqn: str, secret: str = "", ctrl_secret: str = "") -> str:
    with pytest.raises(FailedPrecondition) as err:
        fabrics.connect(spec(export, host_nqn, secret, ctrl_secret))
    assert not controllers_for(export.subsystem_nqn)
    return str(err.value)


def attach(export, host_nqn: str, creds, loss: int = 5) -> tuple[str, bytes]:
    """Connect with `creds`, write a block: (the controller, the block written)."""
    (ctrl,) = fabrics.connect(spec(export, host_nqn, creds.secret, creds.ctrl_secret, loss))
    disk = wait_for(lambda: block_device_with_uuid(export.namespace_uuid), 60, "the namespace")
    data = os.urandom(MiB)
    write_block(f"/dev/{disk}", data)
    return ctrl, data


def read_back(export) -> bytes:
    return read_block(f"/dev/{block_device_with_uuid(export.namespace_uuid)}", MiB)


def round_trip(export, host_nqn: str, creds) -> None:
    """Connect with `creds`, write and read back a block, disconnect."""
    _, data = attach(export, host_nqn, creds)
    assert read_back(export) == data
    disconnect(export)


def test_only_the_published_host_with_its_secret_connects(kernel_backend, thin_pool, tmp_path):
    b = kernel_backend
    h1, h2 = new_host_nqn(), new_host_nqn()
    a = b.create_volume("pvc-auth-a", 64 * MiB)
    other = b.create_volume("pvc-auth-b", 64 * MiB)
    export = b.add_host(a.id, h1, auth="bidirectional")
    b.add_host(other.id, h2, auth="unidirectional")
    mine, theirs = b.host_credentials(a.id, h1), b.host_credentials(other.id, h2)
    reasons = {
        "no secret": refused(export, h1),
        "a wrong secret": refused(export, h1, new_secret()),
        "another volume's secret": refused(export, h1, theirs.secret),
        "a wrong controller key": refused(export, h1, mine.secret, new_secret()),
    }
    for case, reason in reasons.items():
        print(f"{case}: {reason}")
        assert "refused:" in reason and reason.split("refused:", 1)[1].strip(), f"{case}: no kernel reason"
        assert mine.secret not in reason and theirs.secret not in reason
    ctrl, data = attach(export, h1, mine, loss=300)  # stays connected through the target's restart

    wipe_configfs()  # what a reboot does; a new backend (the agent restarted) restores the keys
    vg, pool = thin_pool
    again = KernelBackend(vg, pool, (Portal("127.0.0.1", "4420"),), tmp_path / "state", overcommit_ratio=2.0,
                          pvs=(SCRATCH_DISK,), fill_interval=0)
    again.restore()
    assert again.host_credentials(a.id, h1) == mine
    wait_for(lambda: live(ctrl), 240, "the host to reconnect with the secret it was given", interval=0.5)
    assert read_back(export) == data
    disconnect(export)
    round_trip(export, h1, mine)  # and a new connect with it works too

    again.remove_host(a.id, h1)  # unpublish, then publish again: new keys
    again.add_host(a.id, h1, auth="bidirectional")
    renewed = again.host_credentials(a.id, h1)
    assert renewed.secret != mine.secret and renewed.ctrl_secret != mine.ctrl_secret
    print("the old secret after a new publish:", refused(export, h1, mine.secret, mine.ctrl_secret))
    round_trip(export, h1, renewed)
    state = tmp_path / "state" / "dhchap.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert renewed.secret not in (tmp_path / "state" / "exports.json").read_text()
    for vol in (a, other):
        again.unexport_volume(vol.id)
    assert renewed.secret not in state.read_text()  # gone with the export


def live(ctrl: str) -> bool | None:
    return Path(f"/sys/class/nvme/{ctrl}/state").read_text().strip() == "live" or None


def _tls_entry(agent: AgentProcess, port: int, pki: Path, who: str) -> dict:
    return {**agent.config_entry(), "endpoint": f"127.0.0.1:{port}",
            "tls": {"ca": str(pki / "ca.crt"), "cert": str(pki / f"{who}.crt"), "key": str(pki / f"{who}.key")}}


def test_the_node_fetches_its_credentials_over_its_own_certificate(thin_pool, tmp_path):
    vg, pool = thin_pool
    port = 7443
    node_id = new_host_nqn()
    pki = tmp_path / "pki"
    bound = next(r.file for r in certs.make(pki, ["127.0.0.1"], 1, [node_id]) if r.host_nqn)
    nvme = tmp_path / "node" / "nvme"
    nvme.mkdir(parents=True)
    (nvme / "hostnqn").write_text(node_id + "\n")
    (nvme / "hostid").write_text(node_id.rsplit(":", 1)[1] + "\n")
    agent = AgentProcess(tmp_path / "agent", vg, pool, SCRATCH_DISK, target_id="local", zone="z1", extra=[
        "--listen", f"127.0.0.1:{port}", "--tls-cert", str(pki / "agent.crt"), "--tls-key", str(pki / "agent.key"),
        "--tls-client-ca", str(pki / "ca.crt")])
    agent.start(timeout=600)
    configs = {}
    for who, cert in (("controller", "controller"), ("node", bound)):
        configs[who] = tmp_path / f"{who}-targets.json"
        configs[who].write_text(json.dumps({"targets": [_tls_entry(agent, port, pki, cert)]}))
    controller = ControllerProcess(tmp_path / "controller", [agent], extra=[
        "--targets-config", str(configs["controller"]), "--default-nvme-auth", "bidirectional"])
    node = NodeProcess(tmp_path / "node", zone="z1", extra=["--targets-config", str(configs["node"])])
    for proc in (controller, node):
        proc.start(timeout=600)
    ctl = Csi(grpc.insecure_channel(f"unix:{controller.endpoint}"))
    on_node = Csi(grpc.insecure_channel(f"unix:{node.endpoint}"))
    as_node = AgentClient(f"127.0.0.1:{port}", TlsFiles(pki / "ca.crt", pki / f"{bound}.crt", pki / f"{bound}.key"),
                          timeout=60)
    captured: list[str] = []
    try:
        cap = block_cap()
        vol = ctl.create("pvc-auth-csi", size=64 * MiB, caps=[cap], parameters={"nvme.ctrlLossTmo": "600"})
        captured.append(str(vol))
        with Attached(ctl, on_node, vol, cap) as attached:
            captured.append(json.dumps(dict(attached.publish_context)))
            assert attached.node_id == node_id and attached.publish_context["nvme.auth"] == "bidirectional"
            data = os.urandom(MiB)
            attached.write(data)
            secrets = json.loads((tmp_path / "agent" / "state" / "dhchap.json").read_text())
            keys = [v for hosts in secrets["volumes"].values() for c in hosts.values() for v in c.values()
                    if v.startswith("DHHC-1")]
            assert len(keys) == 2, "bidirectional: a host and a controller secret"
            backend_id = vol.volume_id.split("/", 1)[1]
            creds = as_node.host_credentials(backend_id, node_id)
            assert {creds.secret, creds.ctrl_secret} == set(keys)
            for call, args in (("create_volume", ("evil", MiB)), ("delete_volume", (backend_id,)),
                               ("add_host", (backend_id, new_host_nqn())), ("set_qos", (backend_id, QoS()))):
                with pytest.raises(PermissionDenied):
                    getattr(as_node, call)(*args)
            with pytest.raises(PermissionDenied):
                as_node.host_credentials(backend_id, new_host_nqn())
            assert read_block(attached.target, MiB) == data
            captured += [p.read_text() for p in Path(KUBELET).rglob("*.json")]
            captured += [p.read_text() for p in (tmp_path / "node" / "state").rglob("*") if p.is_file()]
        captured += [(tmp_path / d / f"{d}.log").read_text() for d in ("agent", "controller", "node")]
        captured.append((tmp_path / "agent" / "state" / "exports.json").read_text())
        leaks = [k for k in keys if any(k in text or k.split(":")[2] in text for text in captured)]
        assert not leaks, "a secret was logged, answered or stored outside the target's 0600 state"
        ctl.delete(vol.volume_id)
    finally:
        as_node.close()
        for ch in (ctl.channel, on_node.channel):
            ch.close()
        for proc in (node, controller):
            proc.stop()
        agent.empty()
        agent.stop()


def test_a_kernel_without_target_auth_refuses_the_publish_and_changes_nothing(kernel_backend):
    """On a kernel without CONFIG_NVME_TARGET_AUTH (bookworm's 6.1) an authenticated publish
    is FAILED_PRECONDITION naming nvme.auth, and no host, subsystem or secret is left; on
    one with it (6.12) the same publish works. Either way never a silent downgrade."""
    b = kernel_backend
    host = new_host_nqn()
    vol = b.create_volume("pvc-auth-kernel", 64 * MiB)
    probe = Path("/sys/kernel/config/nvmet/hosts") / host
    probe.mkdir()
    supported = (probe / "dhchap_key").exists()
    probe.rmdir()
    if supported:
        b.add_host(vol.id, host, auth="unidirectional")
        assert b.host_credentials(vol.id, host).secret
        assert (probe / "dhchap_key").read_text().strip() == b.host_credentials(vol.id, host).secret
        return
    with pytest.raises(FailedPrecondition, match="nvme.auth: none"):
        b.add_host(vol.id, host, auth="unidirectional")
    assert not probe.exists() and b.get_export(vol.id) is None
    assert not (b.exporter.secrets.path.exists() and b.exporter.secrets.all())
