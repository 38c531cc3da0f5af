"""The agent over TCP with TLS: a controller (O=sluice, OU=controller) with a client
certificate signed by the configured CA gets in; one without a certificate, or without
TLS, does not."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from nvme_target.agent.client import AgentClient, TlsFiles
from nvme_target.agent.serve import start
from nvme_target.settings import AgentSettings
from sluice_common.errors import Unavailable
from sluice_proto import target_pb2, target_pb2_grpc
from tests.fakes.memory_backend import MemoryBackend


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(d: Path) -> dict[str, Path]:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sluice-test-ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for name, san in (("server", "IP:127.0.0.1"), ("client", "DNS:controller")):
        subject = "/O=sluice/OU=controller/CN=client" if name == "client" else f"/CN={name}"
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
                "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
                "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.crt"))
    return {p.stem + p.suffix: p for p in d.iterdir()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Backend(MemoryBackend):
    def restore(self) -> None:
        pass


@pytest.fixture
def tls_agent(tmp_path):
    pki = make_pki(tmp_path)
    port = free_port()
    settings = AgentSettings(socket=None, listen=f"127.0.0.1:{port}", tls_cert=pki["server.crt"],
                             tls_key=pki["server.key"], tls_client_ca=pki["ca.crt"]).validate()
    server = start(settings, _Backend())
    yield f"127.0.0.1:{port}", pki
    server.stop(grace=None)


def test_client_certificate_gets_in(tls_agent):
    endpoint, pki = tls_agent
    client = AgentClient(endpoint, tls=TlsFiles(pki["ca.crt"], pki["client.crt"], pki["client.key"]), timeout=10)
    assert client.health().ready
    client.close()


def test_no_client_certificate_is_refused(tls_agent):
    endpoint, pki = tls_agent
    channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(pki["ca.crt"].read_bytes()))
    with pytest.raises(grpc.RpcError) as refused:
        target_pb2_grpc.TargetAgentStub(channel).CheckHealth(target_pb2.CheckHealthRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_plaintext_is_refused(tls_agent):
    endpoint, _ = tls_agent
    client = AgentClient(endpoint, timeout=5)
    with pytest.raises(Unavailable):
        client.health()
    client.close()
