"""Who a Sluice process is on the agent's mTLS channel: its certificate's subject says
the role (O=sluice, OU=controller|node|agent) and a node's certificate may carry its
host NQN as a URI subject alternative name (`nqn.2014-08.org.nvmexpress:uuid:...`),
which binds it to that one host."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

ORG = "sluice"
ROLES = ("controller", "node", "agent")
NQN_PREFIX = "nqn."


@dataclass(frozen=True)
class Identity:
    role: str           # one of ROLES, or "" when the certificate names none
    host_nqn: str = ""  # a node certificate bound to one host NQN
    subject: str = ""   # for logs

    def describe(self) -> str:
        bound = f" for {self.host_nqn}" if self.host_nqn else ""
        return f"{self.role or 'no role'}{bound} ({self.subject})"


LOCAL = Identity("controller", subject="local caller (unix socket or plaintext listener)")


def subject(role: str, common_name: str) -> x509.Name:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def from_pem(pem: bytes) -> Identity:
    """The identity a peer certificate claims (already verified against the CA by TLS)."""
    cert = x509.load_pem_x509_certificate(pem)
    name = cert.subject
    orgs = [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    units = [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    role = units[0] if orgs == [ORG] and len(units) == 1 and units[0] in ROLES else ""
    nqns = _host_nqns(cert) if role == "node" else []
    if len(nqns) > 1:  # one node, one host: a certificate naming several is no node's
        role = ""
    return Identity(role, nqns[0] if len(nqns) == 1 else "", name.rfc4514_string())


def _host_nqns(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in sans.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(NQN_PREFIX)]
