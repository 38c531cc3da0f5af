"""StorageClass parameters: parsed once, validated, stored with the volume.

    qos.readIOPS, qos.writeIOPS     positive integers
    qos.readBPS, qos.writeBPS       bytes per second: an integer or a quantity (500Mi, 2G)
    qos.class                       latency protection: "latency" (protected) or "bulk" (yields)
    qos.latencyTargetUs             a latency volume's objective, mean µs per I/O (1..10^8)
    qos.minBPS, qos.minIOPS         a bulk volume's floor: never squeezed below it
    nvme.ctrlLossTmo                seconds the initiator keeps reconnecting   (1..3600, or -1:
                                    forever, the safe choice for checkpoints)
    nvme.reconnectDelay             seconds between reconnect attempts       (1..300)
    nvme.keepAliveTmo               keep-alive timeout, seconds              (1..300)
    nvme.nrIoQueues                 I/O queues per controller                (1..128)
    pool                            only place the volume on targets of this pool
    nvme.auth                       DH-HMAC-CHAP: none, unidirectional or bidirectional
                                    (absent: the controller's --default-nvme-auth)

Unknown keys are refused (INVALID_ARGUMENT naming the key), except those prefixed
`csi.storage.k8s.io/` that the sidecars add. The QoS values are normalised (bytes as
integers) and are kept by the target (Backend.set_qos), which nodes watch; the node
enforces them with io.max. A VolumeAttributesClass may set the qos.* keys too: at
creation (mutable_parameters) and later (ControllerModifyVolume).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from collections.abc import Mapping

from csi_driver import quantity
from nvme_target import dhchap
from nvme_target.model import CLASS_KEY, POLICY_KEYS, QOS_KEYS, QoS
from sluice_common.errors import InvalidArgument

__all__ = ["QoS", "VolumeParams", "parse", "parse_mutable"]

SIDECAR_PREFIX = "csi.storage.k8s.io/"
MAX_IOPS = 10**9
QOS_IOPS = {k: v for k, v in QOS_KEYS.items() if k.endswith("IOPS")}
QOS_BPS = {k: v for k, v in QOS_KEYS.items() if k.endswith("BPS")}
NVME_RANGES = {
    "nvme.ctrlLossTmo": (1, 3600),
    "nvme.reconnectDelay": (1, 300),
    "nvme.keepAliveTmo": (1, 300),
    "nvme.nrIoQueues": (1, 128),
}
NVME_FOREVER = {"nvme.ctrlLossTmo": -1}  # the kernel's "reconnect forever"
POOL = "pool"
AUTH = "nvme.auth"
CLASSES = ("latency", "bulk")
MAX_LATENCY_US = 10**8


@dataclass(frozen=True)
class VolumeParams:
    qos: QoS = QoS()
    nvme: Mapping[str, int] = field(default_factory=dict)
    pool: str | None = None
    auth: str | None = None  # None: the controller's default, decided at publish

    def as_params(self) -> dict[str, str]:
        """The canonical key/value form, stored with the volume and put in its context."""
        out = self.qos.as_params() | {k: str(v) for k, v in sorted(self.nvme.items())}
        if self.pool:
            out[POOL] = self.pool
        if self.auth:
            out[AUTH] = self.auth
        return out


def parse(parameters: Mapping[str, str], field_name: str = "parameters") -> VolumeParams:
    qos: dict = {}
    nvme: dict[str, int] = {}
    pool = auth = None
    for key, value in parameters.items():
        if key.startswith(SIDECAR_PREFIX):
            continue
        if key in QOS_IOPS or key in QOS_BPS or key in POLICY_KEYS or key == CLASS_KEY:
            qos.update(_qos_entry(key, value, field_name))
        elif key in NVME_RANGES:
            nvme[key] = _ranged(key, value, field_name)
        elif key == AUTH:
            auth = dhchap.check_mode(value, f"{field_name}: {AUTH}")
        elif key == POOL:
            if not value:
                raise InvalidArgument(f"{field_name}: pool must not be empty")
            pool = value
        else:
            raise InvalidArgument(f"{field_name}: unknown key {key!r}")
    delay, loss = nvme.get("nvme.reconnectDelay"), nvme.get("nvme.ctrlLossTmo")
    if delay is not None and loss is not None and loss != -1 and delay > loss:
        raise InvalidArgument(f"{field_name}: nvme.reconnectDelay ({delay}) exceeds nvme.ctrlLossTmo ({loss})")
    _check_policy(QoS(**qos), field_name)
    return VolumeParams(qos=QoS(**qos), nvme=nvme, pool=pool, auth=auth)


def parse_mutable(parameters: Mapping[str, str], field_name: str = "mutable_parameters") -> QoS:
    """Parameters that may change on a live volume: the qos.* keys only. The value "max"
    removes that limit (0 in the result: see QoS.merged)."""
    mutable = QOS_IOPS | QOS_BPS | POLICY_KEYS | {CLASS_KEY: "qos_class"}
    for key in parameters:
        if key not in mutable:
            raise InvalidArgument(f"{field_name}: {key!r} cannot be changed (only qos.* keys can)")
    removed = {mutable[k]: (0 if k != CLASS_KEY else "") for k, v in parameters.items() if v == "max"}
    limits = parse({k: v for k, v in parameters.items() if v != "max"}, field_name).qos
    return replace(limits, **removed)


def check_policy(qos: QoS, field_name: str = "mutable_parameters") -> None:
    """The protection keys must suit the class the volume ends up with (after a merge)."""
    _check_policy(qos, field_name)


def _check_policy(qos: QoS, field_name: str) -> None:
    if qos.latency_target_us is not None and qos.qos_class not in (None, "latency"):
        raise InvalidArgument(f"{field_name}: qos.latencyTargetUs applies to qos.class latency only, "
                              f"not {qos.qos_class!r}")
    for key, value in (("qos.minBPS", qos.min_bps), ("qos.minIOPS", qos.min_iops)):
        if value is not None and qos.qos_class not in (None, "bulk"):
            raise InvalidArgument(f"{field_name}: {key} applies to qos.class bulk only, not {qos.qos_class!r}")


def _qos_entry(key: str, value: str, field_name: str) -> dict:
    """One validated qos.* key as its QoS attribute."""
    if key == CLASS_KEY:
        if value not in CLASSES:
            raise InvalidArgument(f"{field_name}: {key} must be one of {', '.join(CLASSES)}, not {value!r}")
        return {"qos_class": value}
    if key == "qos.latencyTargetUs":
        if not value.isdigit() or not 0 < int(value) <= MAX_LATENCY_US:
            raise InvalidArgument(f"{field_name}: {key} must be an integer from 1 to {MAX_LATENCY_US}, "
                                  f"not {value!r}")
        return {"latency_target_us": int(value)}
    attr = (QOS_IOPS | QOS_BPS | POLICY_KEYS)[key]
    return {attr: _qos_value(key, value, field_name)}


def _qos_value(key: str, value: str, field_name: str) -> int:
    if key in QOS_IOPS or key == "qos.minIOPS":
        if not value.isdigit():
            raise InvalidArgument(f"{field_name}: {key} must be a positive integer, not {value!r}")
        number = int(value)
        if not 0 < number <= MAX_IOPS:
            raise InvalidArgument(f"{field_name}: {key} must be between 1 and {MAX_IOPS}")
        return number
    number = quantity.parse(value, f"{field_name}: {key}")
    if number <= 0:
        raise InvalidArgument(f"{field_name}: {key} must be positive")
    return number


def _ranged(key: str, value: str, field_name: str) -> int:
    """An integer within NVME_RANGES[key] (or the key's NVME_FOREVER value)."""
    low, high = NVME_RANGES[key]
    number = int(value) if re.fullmatch(r"-?[0-9]{1,9}", value) else None
    if number is not None and (low <= number <= high or number == NVME_FOREVER.get(key)):
        return number
    forever = f" (or {NVME_FOREVER[key]}: forever)" if key in NVME_FOREVER else ""
    raise InvalidArgument(f"{field_name}: {key} must be an integer from {low} to {high}{forever}, not {value!r}")
