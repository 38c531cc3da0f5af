"""`sluice certs`: the mTLS identities of the target agents and their clients.

Writes, into a new directory (files 0600), certificates signed by a new CA whose
subjects say the role (O=sluice, OU=agent|controller|node; sluice_common/identity.py):
the agents' serving certificate (valid for every address given with --agent-address,
which is how the controller and nodes reach the agents: the endpoints in targets.json),
the controller's client certificate, a node certificate shared by every node plugin,
and for each --node-nqn a node certificate bound to that host NQN (a URI SAN), which
acts only for that host. Prints the kubectl commands that make the Secrets (the same
names deploy/cert-manager issues); no key material is printed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sluice_common import identity
from sluice_common.errors import InvalidArgument

CA_NAME = "sluice-agent-ca"


@dataclass(frozen=True)
class Role:
    file: str          # <file>.crt / <file>.key
    secret: str        # the Secret deploy/ mounts
    role: str          # the subject's OU
    common_name: str
    server: bool = False
    host_nqn: str = ""


def roles(node_nqns: Sequence[str] = ()) -> list[Role]:
    out = [Role("agent", "sluice-agent-server", "agent", "sluice-agent", server=True),
           Role("controller", "sluice-controller-client", "controller", "sluice-controller"),
           Role("node", "sluice-node-client", "node", "sluice-node")]
    for nqn in node_nqns:
        tag = hashlib.sha256(nqn.encode()).hexdigest()[:10]
        out.append(Role(f"node-{tag}", f"sluice-node-{tag}-client", "node", f"sluice-node-{tag}", host_nqn=nqn))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluice certs", description=__doc__.split("\n\n")[1])
    p.add_argument("--out", type=Path, required=True, help="a new directory for the files")
    p.add_argument("--agent-address", action="append", required=True, metavar="IP|DNS",
                   help="an address the agents are reached at, as in targets.json (repeatable)")
    p.add_argument("--node-nqn", action="append", default=[], metavar="NQN",
                   help="also a node certificate bound to this host NQN (repeatable)")
    p.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    p.add_argument("--namespace", default="sluice-system")
    return p


def _san(address: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        return x509.DNSName(address)


def _builder(subject: x509.Name, key, issuer: x509.Name, days: int, ca: bool) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))


def _leaf(role: Role, key, ca: x509.Certificate, ca_key, days: int, addresses: Sequence[str]) -> x509.Certificate:
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role.server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (_builder(identity.subject(role.role, role.common_name), key, ca.subject, days, ca=False)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    sans = [_san(a) for a in addresses] if role.server else []
    if role.host_nqn:
        sans.append(x509.UniformResourceIdentifier(role.host_nqn))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make(out: Path, addresses: Sequence[str], days: int, node_nqns: Sequence[str] = ()) -> list[Role]:
    if days <= 0:
        raise InvalidArgument("--days must be positive")
    for nqn in node_nqns:
        if not nqn.startswith(identity.NQN_PREFIX) or any(c.isspace() or c in ",/" for c in nqn):
            raise InvalidArgument(f"--node-nqn {nqn!r} is not a host NQN (nqn.…)")
    try:
        out.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        raise InvalidArgument(f"--out {out}: exists; give a new directory (nothing is overwritten)") from None
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.ORG),
                         x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca = _builder(ca_name, ca_key, ca_name, days, ca=True).sign(ca_key, hashes.SHA256())
    _write(out / "ca.crt", _pem(ca))
    _write(out / "ca.key", _key_pem(ca_key))
    made = roles(node_nqns)
    for role in made:
        key = ec.generate_private_key(ec.SECP256R1())
        _write(out / f"{role.file}.crt", _pem(_leaf(role, key, ca, ca_key, days, addresses)))
        _write(out / f"{role.file}.key", _key_pem(key))
    return made


def commands(out: Path, namespace: str, made: Sequence[Role]) -> list[str]:
    return [f"kubectl -n {namespace} create secret generic {r.secret} --from-file=tls.crt={out}/{r.file}.crt "
            f"--from-file=tls.key={out}/{r.file}.key --from-file=ca.crt={out}/ca.crt"
            + (f"  # node {r.host_nqn}" if r.host_nqn else "")
            for r in made]


def main(argv: Sequence[str]) -> int:
    ns = parser().parse_args(argv)
    try:
        made = make(ns.out, ns.agent_address, ns.days, ns.node_nqn)
    except InvalidArgument as exc:
        print(f"sluice certs: {exc}")
        return 2
    print(f"# CA, agent, controller and node certificates in {ns.out} (keep ca.key offline). Now run:")
    print("\n".join(commands(ns.out, ns.namespace, made)))
    return 0
