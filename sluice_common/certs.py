"""`sluice certs`: the mTLS identities of the target agents and their clients.

Writes, into a new directory (files 0600): a CA, the agents' serving certificate (valid
for every address given with --agent-address, which is how the controller and nodes
reach the agents: the endpoints in targets.json) and one client certificate for the
controller and node plugins, all signed by that CA. Prints the two kubectl commands that
make the sluice-agent-server and sluice-agent-client Secrets from them; no key material
is printed.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sluice_common.errors import InvalidArgument

SECRETS = {"sluice-agent-server": "server", "sluice-agent-client": "client"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice certs", description=__doc__.split("\n\n")[1])
    p.add_argument("--out", type=Path, required=True, help="a new directory for the files")
    p.add_argument("--agent-address", action="append", required=True, metavar="IP|DNS",
                   help="an address the agents are reached at, as in targets.json (repeatable)")
    p.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    p.add_argument("--namespace", default="sluice-system")
    return p


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(address: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return x509.DNSName(address)


def _certificate(cn, key, issuer, issuer_key, days, *, ca=False, usage=None, sans=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(a) for a in sans]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make(out: Path, addresses: Sequence[str], days: int) -> None:
    if days <= 0:
        raise InvalidArgument("--days must be positive")
    try:
        out.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        raise InvalidArgument(f"--out {out}: exists; give a new directory (nothing is overwritten)") from None
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("sluice-agent-ca", ca_key, _name("sluice-agent-ca"), ca_key, days, ca=True)
    _write(out / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca.key", _key_pem(ca_key))
    for role, usage, sans in (("server", ExtendedKeyUsageOID.SERVER_AUTH, addresses),
                              ("client", ExtendedKeyUsageOID.CLIENT_AUTH, ())):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(f"sluice-agent-{role}", key, ca.subject, ca_key, days, usage=usage, sans=sans)
        _write(out / f"{role}.crt", cert.public_bytes(serialization.Encoding.PEM))
        _write(out / f"{role}.key", _key_pem(key))


def commands(out: Path, namespace: str) -> list[str]:
    return [f"kubectl -n {namespace} create secret generic {secret} --from-file=tls.crt={out}/{role}.crt "
            f"--from-file=tls.key={out}/{role}.key --from-file=ca.crt={out}/ca.crt"
            for secret, role in SECRETS.items()]


def main(argv: Sequence[str]) -> int:
    ns = parser().parse_args(argv)
    try:
        make(ns.out, ns.agent_address, ns.days)
    except InvalidArgument as exc:
        print(f"sluice certs: {exc}")
        return 2
    print(f"# CA, agent and client certificates in {ns.out} (keep ca.key offline). Now run:")
    print("\n".join(commands(ns.out, ns.namespace)))
    return 0
