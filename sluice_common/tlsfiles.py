"""mTLS files that are re-read when they change: a rotated Kubernetes Secret (kubelet
swaps the mounted files) takes effect without a restart.

The agent serves with grpc's dynamic server credentials: on every new TLS handshake
grpc asks `ServerTls.fetch`, which returns the new certificate, key and client CA when
any file changed (size, mtime or inode), else None (keep the current ones). Connections
already open keep the identity they were made with; new ones get the new files.
Clients (AgentClient) compare the same stamp before each call and make a new channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

log = structlog.get_logger(__name__)


def stamp(*paths: Path) -> tuple:
    """What changes when any of the files is replaced or rewritten (follows symlinks)."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


@dataclass(frozen=True)
class TlsFiles:
    """A client's files: the CA that signs the agents' certificates, its own certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def stamp(self) -> tuple:
        return stamp(self.ca, self.cert, self.key)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes(),
                                            private_key=self.key.read_bytes(),
                                            certificate_chain=self.cert.read_bytes())


class ServerTls:
    """The agent's serving certificate and key and the CA its clients' certificates must chain to."""

    def __init__(self, cert: Path, key: Path, client_ca: Path) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._stamp: tuple = ()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._load(), self.fetch,
                                                   require_client_authentication=True)

    def fetch(self):
        """grpc's certificate_configuration_fetcher: new files, or None for "unchanged"."""
        if stamp(self.cert, self.key, self.client_ca) == self._stamp:
            return None
        try:
            config = self._load()
        except (OSError, ValueError) as exc:  # mid-rotation: keep serving with the last good files
            log.warning("TLS files unreadable, keeping the current ones", error=str(exc))
            return None
        log.info("TLS files changed: new connections use them", cert=str(self.cert), client_ca=str(self.client_ca))
        return config

    def _load(self):
        self._stamp = stamp(self.cert, self.key, self.client_ca)
        return grpc.ssl_server_certificate_configuration(
            [(self.key.read_bytes(), self.cert.read_bytes())], root_certificates=self.client_ca.read_bytes())
