"""The storage nodes a controller places volumes on.

Each target has an id, a Backend (an AgentClient to a remote agent, or an in-process
backend in all-in-one mode), a topology segment and an optional pool label. `reads` is
the same target behind a short deadline (READ_TIMEOUT): name lookups and lists go
through it, so a black-holed target costs a bounded wait, never the long create
deadline. Health is cached for a few seconds and refreshed by a background checker
(server.py), which logs changes: the controller's Probe never waits on a target.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping

import structlog

from csi_driver import ids
from nvme_target.agent.client import AgentClient, TlsFiles
from nvme_target.backend import Backend
from sluice_common import topology as segments
from sluice_common.errors import InvalidArgument, NotFound, SluiceError

log = structlog.get_logger(__name__)
HEALTH_TTL = 5.0
READ_TIMEOUT = 30.0  # seconds one lookup or list call waits for a target before it counts as silent


@dataclass(frozen=True)
class TargetConfig:
    id: str
    endpoint: str | None = None        # None: in-process (all-in-one mode)
    tls: TlsFiles | None = None
    topology: Mapping[str, str] = field(default_factory=dict)
    pool: str | None = None


class Target:
    def __init__(self, config: TargetConfig, backend: Backend, reads: Backend | None = None) -> None:
        self.config = config
        self.backend = backend
        self.reads = reads or backend
        self._checked_at = -HEALTH_TTL
        self._healthy = False
        self._problem = ""
        self._seen_at = 0.0  # wall clock of the last health check it answered ready
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def topology(self) -> Mapping[str, str]:
        return self.config.topology

    def healthy(self) -> bool:
        with self._lock:
            if time.monotonic() - self._checked_at < HEALTH_TTL:
                return self._healthy
        try:
            health = self.backend.health()
            healthy, problem = health.ready, "; ".join(health.problems)
        except SluiceError as exc:
            healthy, problem = False, str(exc)
        with self._lock:
            if healthy != self._healthy or problem != self._problem:
                log.info("target health", target=self.id, healthy=healthy, problem=problem)
            self._healthy, self._problem, self._checked_at = healthy, problem, time.monotonic()
            if healthy:
                self._seen_at = time.time()
        return healthy

    @property
    def problem(self) -> str:
        return self._problem

    def status(self) -> tuple[bool, float]:
        """(healthy at the last check, wall-clock time it last answered ready; 0: never),
        as cached: asks nothing (for metrics)."""
        with self._lock:
            return self._healthy, self._seen_at

    def serves(self, segment: Mapping[str, str]) -> bool:
        """Whether this target's volumes are accessible from the topology `segment`."""
        return all(segment.get(key) == value for key, value in self.topology.items())


class Targets:
    def __init__(self, targets: list[Target]) -> None:
        seen = [t.id for t in targets]
        if len(set(seen)) != len(seen):
            raise InvalidArgument(f"duplicate target ids in {seen}")
        self._by_id = {t.id: t for t in targets}

    def __iter__(self):
        return iter(self._by_id.values())

    def get(self, target_id: str, what: str) -> Target:
        try:
            return self._by_id[target_id]
        except KeyError:
            raise NotFound(f"{what} not found: no target {target_id!r}") from None

    def up(self) -> list[Target]:
        return [t for t in self._by_id.values() if t.healthy()]

    def __contains__(self, target_id: object) -> bool:
        return target_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)


def load_config(path: Path) -> list[TargetConfig]:
    """Read the controller's targets file (JSON, as a ConfigMap mounts it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"targets config {path}: {exc}") from None
    entries = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument(f"targets config {path}: expected {{\"targets\": [ ... ]}} with at least one")
    return [_target_config(e, path) for e in entries]


def _target_config(entry: dict, path: Path) -> TargetConfig:
    try:
        tls = entry.get("tls")
        return TargetConfig(
            id=ids.check_target_id(entry["id"]),
            endpoint=entry["endpoint"],
            tls=TlsFiles(Path(tls["ca"]), Path(tls["cert"]), Path(tls["key"])) if tls else None,
            topology=_topology(entry),
            pool=entry.get("pool"),
        )
    except (KeyError, TypeError) as exc:
        raise InvalidArgument(f"targets config {path}: target entry {entry!r} lacks {exc}") from None


def _topology(entry: dict) -> dict[str, str]:
    """The entry's segment; none given: the default fabric, which every node reports by default."""
    given = entry.get("topology")
    if not given:
        return segments.default_segment()
    return {str(k): str(v) for k, v in given.items()}


def connect(configs: list[TargetConfig], read_timeout: float = READ_TIMEOUT) -> Targets:
    return Targets([Target(c, AgentClient(c.endpoint, c.tls), AgentClient(c.endpoint, c.tls, timeout=read_timeout))
                    for c in configs if c.endpoint])
