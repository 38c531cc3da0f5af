"""The node's NVMe host identity (host NQN and host ID).

Read from /etc/nvme/hostnqn and /etc/nvme/hostid when present (what nvme-cli and the
distribution set up); otherwise generated once and persisted there, so the identity is
stable across restarts. Duplicate host NQNs across nodes are a known field failure
(cloned images): the identity in use is logged at start and by NodeGetInfo.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog

from nvme_target import validate
from sluice_common.errors import InvalidArgument

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class HostIdentity:
    host_nqn: str
    host_id: str


def load_or_create(nvme_dir: Path) -> HostIdentity:
    nqn_file, id_file = nvme_dir / "hostnqn", nvme_dir / "hostid"
    host_id = _read(id_file)
    host_nqn = _read(nqn_file)
    if not host_id:
        host_id = str(uuid.uuid4())
        _write(id_file, host_id)
    if not host_nqn:
        host_nqn = f"nqn.2014-08.org.nvmexpress:uuid:{host_id}"
        _write(nqn_file, host_nqn)
    try:
        validate.host_nqn(host_nqn)
        uuid.UUID(host_id)
    except (InvalidArgument, ValueError) as exc:
        raise InvalidArgument(f"host identity in {nvme_dir} is unusable: {exc}") from None
    identity = HostIdentity(host_nqn, host_id)
    log.info("nvme host identity", host_nqn=host_nqn, host_id=host_id, source=str(nvme_dir))
    return identity


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


def _write(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value + "\n")
    tmp.replace(path)
