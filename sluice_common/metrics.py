"""Serving Prometheus metrics: one HTTP endpoint per process (node plugin, controller,
agent), its collectors chosen by the process's mode. Values are read on scrape by
custom collectors (sysfs, cgroupfs, the processes' own records), never by polling
storage; counters of events (calls, restores) are kept as they happen."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import structlog
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from sluice_common.errors import InvalidArgument

log = structlog.get_logger(__name__)


def check_port(port: int, flag: str) -> int:
    if not 0 <= port <= 65535:
        raise InvalidArgument(f"{flag} {port}: expected 0 (off) or a TCP port")
    return port


def serve(bind: str, port: int, collectors: Iterable[Collector] = (),
          registry: CollectorRegistry = REGISTRY) -> threading.Thread | None:
    """Register the collectors and serve /metrics on bind:port (port 0: off).
    The process's default registry also carries process_* (RSS, CPU) and the
    event counters of sluice_common/ modules."""
    if not port:
        return None
    for collector in collectors:
        registry.register(collector)
    _, thread = start_http_server(port, addr=bind, registry=registry)
    log.info("metrics serving", address=f"{bind}:{port}", path="/metrics")
    return thread


def read_text(path) -> str:
    """A sysfs/cgroupfs file's text, "" when it is gone (a device or pod went away
    between listing and reading: a scrape never fails for it)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
