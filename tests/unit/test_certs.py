"""`sluice certs` makes identities the agent and its clients accept: an agent serving
with the agent files lets in the controller and nodes with theirs, over the address
given, and each certificate's subject says its role (a bound node's also its NQN)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from csi_driver.launch import main
from nvme_target.agent.client import AgentClient, TlsFiles
from nvme_target.agent.serve import start
from nvme_target.settings import AgentSettings
from sluice_common import identity
from tests.unit.test_agent_tls import _Backend, free_port

NQN = "nqn.2014-08.org.nvmexpress:uuid:6b1b3c1e-0000-4000-8000-000000000001"


def test_the_certificates_work_between_agent_and_client(tmp_path, capsys):
    out = tmp_path / "pki"
    assert main(["certs", "--out", str(out), "--agent-address", "127.0.0.1", "--agent-address", "storage-a",
                 "--node-nqn", NQN]) == 0
    printed = capsys.readouterr().out
    for secret in ("sluice-agent-server", "sluice-controller-client", "sluice-node-client"):
        assert secret in printed
    keys = sorted(out.glob("*.key"))
    assert len(keys) == 5  # ca, agent, controller, node, the bound node
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_text() not in printed
    ids = {p.stem: identity.from_pem(p.read_bytes()) for p in out.glob("*.crt") if p.stem != "ca"}
    bound = [i for i in ids.values() if i.host_nqn]
    assert (ids["agent"].role, ids["controller"].role, ids["node"].role) == ("agent", "controller", "node")
    assert ids["node"].host_nqn == "" and [(b.role, b.host_nqn) for b in bound] == [("node", NQN)]
    port = free_port()
    settings = AgentSettings(socket=None, listen=f"127.0.0.1:{port}", tls_cert=out / "agent.crt",
                             tls_key=out / "agent.key", tls_client_ca=out / "ca.crt").validate()
    server = start(settings, _Backend())
    try:
        client = AgentClient(f"127.0.0.1:{port}", tls=TlsFiles(out / "ca.crt", out / "controller.crt",
                                                              out / "controller.key"), timeout=10)
        assert client.health().ready
        client.close()
    finally:
        server.stop(grace=None)


def test_an_existing_directory_is_never_overwritten(tmp_path, capsys):
    assert main(["certs", "--out", str(tmp_path), "--agent-address", "10.0.0.5"]) == 2
    assert "exists" in capsys.readouterr().out


def test_a_bad_node_nqn_is_refused(tmp_path, capsys):
    assert main(["certs", "--out", str(tmp_path / "x"), "--agent-address", "a", "--node-nqn", "node-1"]) == 2
    assert "--node-nqn" in capsys.readouterr().out and not (tmp_path / "x").exists()


def test_the_entry_point_offers_it():
    sluice = Path(sys.executable).parent / "sluice"
    out = subprocess.run([str(sluice), "certs", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--agent-address" in out.stdout and "--node-nqn" in out.stdout


@pytest.mark.parametrize("days", ["0", "-1"])
def test_bad_validity_is_refused(tmp_path, days, capsys):
    assert main(["certs", "--out", str(tmp_path / "x"), "--agent-address", "a", "--days", days]) == 2
