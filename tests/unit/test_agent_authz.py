"""The agent authorizes every RPC by the caller's certificate (nvme_target/agent/authz.py):
the controller may do everything; a node only watches the volumes exported to it and
fetches its own connect credentials; a node certificate bound to a host NQN acts only
for that NQN; other roles and certificates without a role get PERMISSION_DENIED. The
TLS files are re-read when they change: a rotation under a live stream. Every test runs
on the in-memory backend and on the SPDK backend (its fake nvmf_tgt, or a real one with
SLUICE_SPDK_NVMF_TGT): the node checks ask the backend who a volume is exported to."""

from __future__ import annotations

import datetime
import os
import shutil
import threading
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nvme_target.agent import authz
from nvme_target.agent.client import AgentClient, TlsFiles
from nvme_target.agent.serve import start
from nvme_target.dhchap import well_formed
from nvme_target.model import IoReport, QoS
from nvme_target.settings import AgentSettings
from sluice_common import certs
from sluice_common.errors import PermissionDenied, Unavailable
from sluice_proto import target_pb2 as pb
from sluice_proto import target_pb2_grpc
from tests.fakes.spdk_real import make_server
from tests.unit.test_agent_tls import _Backend, free_port
from tests.unit.test_spdk_backend import make_backend

NQN1 = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000001"
NQN2 = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-000000000002"
NODE_METHODS = {"WatchVolumes", "GetHostCredentials", "ReportIO"}


def _roleless(pki: Path) -> None:
    """A client certificate from the right CA whose subject names no Sluice role."""
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    (pki / "roleless.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "roleless.key").write_bytes(certs._key_pem(key))


@pytest.fixture(params=["memory", "spdk"])
def backend(request, tmp_path):
    if request.param == "memory":
        yield _Backend()
        return
    (tmp_path / "spdk").mkdir()
    server = make_server(tmp_path / "spdk")
    made: list = []
    yield make_backend(server, tmp_path, made)
    for b in made:
        b.close()
    server.stop()


@pytest.fixture
def agent(tmp_path, backend):
    pki = tmp_path / "pki"
    made = certs.make(pki, ["127.0.0.1"], 1, [NQN1])
    bound = next(r.file for r in made if r.host_nqn)
    shutil.copy(pki / f"{bound}.crt", pki / "node1.crt")
    shutil.copy(pki / f"{bound}.key", pki / "node1.key")
    _roleless(pki)
    port = free_port()
    settings = AgentSettings(socket=None, listen=f"127.0.0.1:{port}", tls_cert=pki / "agent.crt",
                             tls_key=pki / "agent.key", tls_client_ca=pki / "ca.crt").validate()
    server = start(settings, backend)
    clients: list[AgentClient] = []

    def client(name: str) -> AgentClient:
        c = AgentClient(f"127.0.0.1:{port}", TlsFiles(pki / "ca.crt", pki / f"{name}.crt", pki / f"{name}.key"),
                        timeout=10)
        clients.append(c)
        return c

    yield backend, client, pki
    for c in clients:
        c.close()
    server.stop(grace=None)
    if backend.protection is not None:
        backend.protection.stop()


def _published(ctl: AgentClient, name: str, host: str, auth: str = "bidirectional") -> str:
    vol = ctl.create_volume(name, 64 << 20)
    ctl.add_host(vol.id, host, auth=auth)
    return vol.id


def test_the_table_names_every_rpc_and_gives_nodes_only_theirs():
    methods = set(pb.DESCRIPTOR.services_by_name["TargetAgent"].methods_by_name)
    assert set(authz.RULES) == methods
    assert all("controller" in roles for roles in authz.RULES.values())
    assert {m for m, roles in authz.RULES.items() if "node" in roles} == NODE_METHODS
    assert not any("agent" in roles for roles in authz.RULES.values())


def test_the_controller_may_do_everything(agent):
    _, client, _ = agent
    ctl = client("controller")
    vol_id = _published(ctl, "v1", NQN1)
    creds = ctl.host_credentials(vol_id, NQN1)
    assert creds.mode == "bidirectional" and well_formed(creds.secret) and well_formed(creds.ctrl_secret)
    ctl.set_qos(vol_id, QoS(read_iops=100))
    ctl.remove_host(vol_id, NQN1)
    ctl.delete_volume(vol_id, unexport=True)


def _call(pki: Path, port_of: AgentClient, cert: str, method: str):
    """Call `method` with an empty request as the holder of `cert`."""
    creds = TlsFiles(pki / "ca.crt", pki / f"{cert}.crt", pki / f"{cert}.key").credentials()
    with grpc.secure_channel(port_of.endpoint, creds) as channel:
        stub = target_pb2_grpc.TargetAgentStub(channel)
        rpc = pb.DESCRIPTOR.services_by_name["TargetAgent"].methods_by_name[method]
        request = getattr(pb, rpc.input_type.name)()
        answer = getattr(stub, method)(request, timeout=10)
        return list(answer) if method == "WatchVolumes" else answer


@pytest.mark.parametrize("method", sorted(set(authz.METHODS) - NODE_METHODS))
@pytest.mark.parametrize("cert", ["node1", "node", "roleless"])
def test_everything_else_is_permission_denied(agent, method, cert):
    _, client, pki = agent
    with pytest.raises(grpc.RpcError) as denied:
        _call(pki, client("controller"), cert, method)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert method in denied.value.details()


@pytest.mark.parametrize("method", ["CheckHealth", "GetHostCredentials", "WatchVolumes"])
def test_an_agent_certificate_is_no_client(agent, method):
    """It is for serving only (extended key usage serverAuth): TLS refuses it as a client."""
    _, client, pki = agent
    with pytest.raises(grpc.RpcError) as refused:
        _call(pki, client("controller"), "agent", method)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_bound_node_fetches_only_its_own_credentials(agent, capsys):
    _, client, _ = agent
    ctl, node1 = client("controller"), client("node1")
    mine = _published(ctl, "mine", NQN1)
    theirs = _published(ctl, "theirs", NQN2)
    creds = node1.host_credentials(mine, NQN1)
    assert creds == ctl.host_credentials(mine, NQN1) and creds.secret
    with pytest.raises(PermissionDenied, match="host_nqn"):
        node1.host_credentials(theirs, NQN2)       # another NQN's credentials
    with pytest.raises(PermissionDenied, match="not exported"):
        node1.host_credentials(theirs, NQN1)       # a volume not published to it
    for method in ("CreateVolume", "DeleteVolume", "AddHost", "SetQoS"):
        with pytest.raises(PermissionDenied, match=method):
            getattr(node1, {"CreateVolume": "create_volume", "DeleteVolume": "delete_volume",
                            "AddHost": "add_host", "SetQoS": "set_qos"}[method])(
                *{"CreateVolume": ("evil", 1 << 20), "DeleteVolume": (mine,), "AddHost": (theirs, NQN1),
                  "SetQoS": (mine, QoS())}[method])
    printed = capsys.readouterr()
    secrets = [creds.secret, creds.ctrl_secret, ctl.host_credentials(theirs, NQN2).secret]
    assert not any(s in printed.out + printed.err for s in secrets)


def test_a_bound_node_reports_io_only_as_itself_and_only_on_its_volumes(agent):
    """Latency protection's reports: false latency for another tenant's volume would let a
    node squeeze that tenant's checkpoints."""
    _, client, _ = agent
    ctl, node1 = client("controller"), client("node1")
    mine = _published(ctl, "mine-io", NQN1)
    theirs = _published(ctl, "theirs-io", NQN2)
    report = IoReport(latency_us=900.0, bps=1e6, iops=250.0)
    node1.report_io(NQN1, {mine: report})
    with pytest.raises(PermissionDenied, match="host_nqn"):
        node1.report_io(NQN2, {theirs: report})      # as another host
    with pytest.raises(PermissionDenied, match="not exported"):
        node1.report_io(NQN1, {theirs: report})      # on a volume not published to it


def test_a_node_watches_only_volumes_exported_to_it(agent):
    _, client, _ = agent
    ctl, node1 = client("controller"), client("node1")
    mine = _published(ctl, "mine", NQN1, auth="none")
    theirs = _published(ctl, "theirs", NQN2, auth="none")
    stop = threading.Event()
    first = next(iter(node1.watch_volumes([mine], stop)))
    stop.set()
    assert first.id == mine
    with pytest.raises(PermissionDenied, match=theirs):
        next(iter(node1.watch_volumes([mine, theirs], threading.Event())))


def test_an_unbound_node_acts_for_hosts_its_volumes_are_exported_to(agent):
    _, client, _ = agent
    ctl, node = client("controller"), client("node")
    vol = _published(ctl, "v", NQN2, auth="unidirectional")
    assert node.host_credentials(vol, NQN2).mode == "unidirectional"
    with pytest.raises(PermissionDenied):
        node.host_credentials(vol, NQN1)


def _rotate(pki: Path, tmp: Path) -> None:
    """A new CA and new certificates replace the files in place (as kubelet updates a
    mounted Secret: each file swapped atomically)."""
    new = tmp / "new"
    made = certs.make(new, ["127.0.0.1"], 1, [NQN1])
    bound = next(r.file for r in made if r.host_nqn)
    for src, dst in [("ca", "ca"), ("agent", "agent"), ("controller", "controller"), (bound, "node1")]:
        for ext in ("crt", "key"):
            os.replace(new / f"{src}.{ext}", pki / f"{dst}.{ext}")


def test_rotated_certificates_take_effect_without_a_restart(agent, tmp_path):
    backend, client, pki = agent
    ctl, node1 = client("controller"), client("node1")
    vol = _published(ctl, "v", NQN1, auth="none")
    old = tmp_path / "old"
    old.mkdir()
    for name in ("ca.crt", "controller.crt", "controller.key"):
        shutil.copy(pki / name, old / name)
    stop = threading.Event()
    stream = node1.watch_volumes([vol], stop, tick=0.2)
    assert next(stream).qos is None                     # the live stream, on the old identities
    _rotate(pki, tmp_path)
    backend.set_qos(vol, QoS(write_iops=7))
    assert next(stream).limits.write_iops == 7          # still served after the rotation
    stop.set()
    assert ctl.get_volume(vol).limits.write_iops == 7   # the client took its new files: a new channel
    stale = AgentClient(ctl.endpoint, TlsFiles(old / "ca.crt", old / "controller.crt", old / "controller.key"),
                        timeout=10)
    with pytest.raises(Unavailable):                    # the old certificate is refused now
        stale.get_volume(vol)
    stale.close()
