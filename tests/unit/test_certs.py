"""`sluice certs` makes identities the agent and its clients accept: an agent serving
with the server files lets in a client with the client files, over the address given."""

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
from tests.unit.test_agent_tls import _Backend, free_port


def test_the_certificates_work_between_agent_and_client(tmp_path, capsys):
    out = tmp_path / "pki"
    assert main(["certs", "--out", str(out), "--agent-address", "127.0.0.1", "--agent-address", "storage-a"]) == 0
    printed = capsys.readouterr().out
    assert "sluice-agent-server" in printed and "sluice-agent-client" in printed
    for name in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600
        assert (out / name).read_text() not in printed
    port = free_port()
    settings = AgentSettings(socket=None, listen=f"127.0.0.1:{port}", tls_cert=out / "server.crt",
                             tls_key=out / "server.key", tls_client_ca=out / "ca.crt").validate()
    server = start(settings, _Backend())
    try:
        client = AgentClient(f"127.0.0.1:{port}", tls=TlsFiles(out / "ca.crt", out / "client.crt",
                                                              out / "client.key"), timeout=10)
        assert client.health().ready
        client.close()
    finally:
        server.stop(grace=None)


def test_an_existing_directory_is_never_overwritten(tmp_path, capsys):
    assert main(["certs", "--out", str(tmp_path), "--agent-address", "10.0.0.5"]) == 2
    assert "exists" in capsys.readouterr().out


def test_the_entry_point_offers_it():
    sluice = Path(sys.executable).parent / "sluice"
    out = subprocess.run([str(sluice), "certs", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--agent-address" in out.stdout


@pytest.mark.parametrize("days", ["0", "-1"])
def test_bad_validity_is_refused(tmp_path, days, capsys):
    assert main(["certs", "--out", str(tmp_path / "x"), "--agent-address", "a", "--days", days]) == 2
