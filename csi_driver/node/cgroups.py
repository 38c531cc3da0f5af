"""Pod cgroups and the block I/O limits on them.

kubelet makes one cgroup per pod, named by the pod UID, under a QoS-class parent:

    systemd driver:   kubepods.slice/[kubepods-<qos>.slice/]kubepods-[<qos>-]pod<uid with _>.slice
    cgroupfs driver:  kubepods/[<qos>/]pod<uid>

(Guaranteed pods sit directly under kubepods; Burstable and BestEffort under their
class.) A limit on the pod cgroup holds for every container in it.

cgroup v2: one line per device in `io.max` ("259:3 rbps=… wbps=… riops=… wiops=…",
"max" for no limit). Buffered writes are throttled when their pages are written back,
which v2 charges to the cgroup that dirtied them only if the memory and io controllers
are both enabled down to the pod; `prepare` makes sure they are.
cgroup v1 (io controller not on v2): the same limits in blkio.throttle.* files. v1
throttling is not hierarchical (a limit holds only for the processes of that very
cgroup), so on v1 the limits are written to the pod's cgroup and to every container
cgroup in it, and each container is held to them on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import structlog

from nvme_target.model import QoS
from sluice_common.errors import FailedPrecondition, InvalidArgument

log = structlog.get_logger(__name__)

POD_UID = re.compile(r"^[0-9a-fA-F][0-9a-fA-F-]{0,63}$")
QOS_CLASSES = ("", "burstable", "besteffort")  # "" is Guaranteed
# io.max key -> QoS attribute, in the order the kernel prints them
IO_MAX_KEYS = {"rbps": "read_bps", "wbps": "write_bps", "riops": "read_iops", "wiops": "write_iops"}
V1_FILES = {"read_bps": "blkio.throttle.read_bps_device", "write_bps": "blkio.throttle.write_bps_device",
            "read_iops": "blkio.throttle.read_iops_device", "write_iops": "blkio.throttle.write_iops_device"}


def pod_cgroup_candidates(pod_uid: str) -> list[str]:
    """Every path (relative to the io hierarchy's root) kubelet may give this pod."""
    if not POD_UID.match(pod_uid):
        raise InvalidArgument(f"volume_context csi.storage.k8s.io/pod.uid {pod_uid!r} is not a pod UID")
    systemd_uid = pod_uid.replace("-", "_")
    out = []
    for qos in QOS_CLASSES:
        if qos:
            out.append(f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{systemd_uid}.slice")
        else:
            out.append(f"kubepods.slice/kubepods-pod{systemd_uid}.slice")
    for qos in QOS_CLASSES:
        out.append(f"kubepods/{qos}/pod{pod_uid}" if qos else f"kubepods/pod{pod_uid}")
    return out


@dataclass(frozen=True)
class Hierarchy:
    """Where the io controller lives: cgroup v2 at `root`, or v1 at `root`/blkio."""

    base: Path
    version: int

    @classmethod
    def detect(cls, cgroup_root: Path) -> Hierarchy:
        controllers = cgroup_root / "cgroup.controllers"
        if controllers.exists() and "io" in controllers.read_text().split():
            return cls(cgroup_root, 2)
        if (cgroup_root / "blkio" / "blkio.throttle.read_bps_device").exists():
            return cls(cgroup_root / "blkio", 1)
        raise FailedPrecondition(f"no io controller under {cgroup_root}: neither cgroup v2 with io in "
                                 f"cgroup.controllers nor a cgroup v1 blkio hierarchy at {cgroup_root}/blkio")

    def pod(self, pod_uid: str) -> Path:
        """The pod's cgroup; FailedPrecondition naming every path tried when it has none."""
        tried = [self.base / rel for rel in pod_cgroup_candidates(pod_uid)]
        for path in tried:
            if path.is_dir():
                return path
        raise FailedPrecondition(f"no cgroup for pod {pod_uid} (cgroup v{self.version}); tried: "
                                 + ", ".join(map(str, tried)))

    def prepare(self, cgroup: Path) -> None:
        """v2: enable io and memory on every level above `cgroup` so it has io.max and
        its writeback is charged to it (kubelet usually did already)."""
        if self.version != 2:
            return
        chain = []
        level = cgroup.parent
        while level != self.base.parent and (level / "cgroup.subtree_control").exists():
            chain.append(level)
            if level == self.base:
                break
            level = level.parent
        for level in reversed(chain):
            control = level / "cgroup.subtree_control"
            missing = [c for c in ("io", "memory") if c not in control.read_text().split()]
            if missing:
                try:
                    control.write_text(" ".join(f"+{c}" for c in missing))
                except OSError as exc:
                    raise FailedPrecondition(f"cannot enable {'+'.join(missing)} in {control}: "
                                             f"{exc.strerror or exc}") from None
                log.info("cgroup controllers enabled", cgroup=str(level), controllers=missing)

    def enforced_at(self, pod: Path) -> list[Path]:
        """Where a pod's limits must be written: v2 the pod's cgroup (limits hold for the
        whole subtree); v1 the pod's cgroup and every cgroup below it."""
        if self.version == 2:
            return [pod]
        return [pod, *sorted(p for p in pod.rglob("*") if p.is_dir())]

    # ------------------------------------------------------------- limits
    def limits(self, cgroup: Path, majmin: str) -> QoS:
        """The limits in force on `cgroup` for the device `majmin` (unlimited: QoS())."""
        if self.version == 2:
            for line in _read_lines(cgroup / "io.max"):
                dev, *pairs = line.split()
                if dev == majmin:
                    values = dict(pair.split("=", 1) for pair in pairs)
                    return QoS(**{attr: int(values[key]) for key, attr in IO_MAX_KEYS.items()
                                  if values.get(key, "max") != "max"})
            return QoS()
        found = {}
        for attr, name in V1_FILES.items():
            for line in _read_lines(cgroup / name):
                dev, value = line.split()
                if dev == majmin and int(value) > 0:
                    found[attr] = int(value)
        return QoS(**found)

    def set_limits(self, cgroup: Path, majmin: str, qos: QoS) -> str:
        """Write the limits (QoS() clears them); returns what was written."""
        if self.version == 2:
            line = f"{majmin} " + " ".join(f"{key}={_or(getattr(qos, attr), 'max')}"
                                            for key, attr in IO_MAX_KEYS.items())
            _write(cgroup / "io.max", line)
            return line
        written = []
        for attr, name in V1_FILES.items():
            line = f"{majmin} {_or(getattr(qos, attr), 0)}"
            _write(cgroup / name, line)
            written.append(f"{name}={line}")
        return "; ".join(written)

    def line(self, cgroup: Path, majmin: str) -> str:
        """The limit line for the device as the kernel shows it ("" when unlimited)."""
        if self.version == 2:
            return next((ln for ln in _read_lines(cgroup / "io.max") if ln.split()[0] == majmin), "")
        return "; ".join(f"{name}={ln}" for name in V1_FILES.values()
                         for ln in _read_lines(cgroup / name) if ln.split()[0] == majmin)

    def stat(self, cgroup: Path, majmin: str) -> str:
        """What the device has done for this cgroup (io.stat; v1: bytes and ios serviced)."""
        if self.version == 2:
            return next((ln for ln in _read_lines(cgroup / "io.stat") if ln.split()[0] == majmin), "")
        parts = []
        for name in ("blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced"):
            for ln in _read_lines(cgroup / name):
                fields = ln.split()
                if fields[0] == majmin and len(fields) == 3:
                    parts.append(f"{name.rsplit('.', 1)[1]}.{fields[1].lower()}={fields[2]}")
        return " ".join(parts)


def _or(value: int | None, default):
    return value if value is not None else default


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def _write(path: Path, line: str) -> None:
    try:
        path.write_text(line)
    except OSError as exc:
        raise FailedPrecondition(f"cannot write {line!r} to {path}: {exc.strerror or exc}") from None
