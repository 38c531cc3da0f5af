"""Calls into nvmf_tgt through SPDK's official client (spdk.rpc.client.JSONRPCClient,
PyPI `spdk`, pinned to the target release). This module only adds what the client
leaves to its callers: one connection shared under a lock, a reconnect when the target
went away (counted, so the backend can tell a restarted target), and typed errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import structlog
from spdk.rpc.client import JSONRPCClient, JSONRPCException

from nvme_target.spdk import errors
from sluice_common.errors import Unavailable

log = structlog.get_logger(__name__)


class SpdkRpc:
    def __init__(self, socket_path: Path, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.connections = 0  # how many times a connection was made: a change means "look again"
        self._client: JSONRPCClient | None = None
        self._lock = threading.Lock()

    def call(self, method: str, **params):
        with self._lock:
            for attempt in (1, 2):
                client = self._connect()
                try:
                    return getattr(client, method)(**params)
                except JSONRPCException as exc:
                    error = _error_of(exc.message)
                    if error is not None:
                        raise errors.translate(method, error["code"], error["message"]) from None
                    problem = exc.message.strip().splitlines()[0]
                except OSError as exc:
                    problem = str(exc)
                self._drop()
                if attempt == 2:
                    raise Unavailable(f"SPDK at {self.socket_path} did not answer {method}: {problem}",
                                      spdk_method=method)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connect(self) -> JSONRPCClient:
        if self._client is None:
            try:
                self._client = JSONRPCClient(str(self.socket_path), timeout=self.timeout)
            except JSONRPCException as exc:
                raise Unavailable(f"SPDK is not answering on {self.socket_path}: "
                                  f"{exc.message.strip().splitlines()[-1]}") from None
            self.connections += 1
            log.info("connected to SPDK", socket=str(self.socket_path), connections=self.connections)
        return self._client

    def _drop(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except OSError:
                pass
            self._client = None


def _error_of(message: str) -> dict | None:
    """The JSON-RPC error object the client folds into its exception text (it ends
    "response:\\n{...}"); None when the exception is about the connection instead."""
    head, sep, tail = message.rpartition("response:\n")
    if not sep or "Got JSON-RPC error response" not in head:
        return None
    try:
        error = json.loads(tail)
    except ValueError:
        return None
    return error if isinstance(error, dict) and "code" in error else None
