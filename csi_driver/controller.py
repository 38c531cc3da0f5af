"""The controller's volume operations in plain Python: the gRPC servicer only converts.

Every call is idempotent: a name or id leads deterministically to the same target
object, and a repeat returns what the first call made (or the same error).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from csi_driver import access, ids, listing, metrics, params, placement
from csi_driver.homes import Homes
from csi_driver.locate import Found, locate, point
from csi_driver.lookup import Asker
from csi_driver.capabilities import Capability, require_supported, unsupported
from csi_driver.locks import InFlight, Reservations
from csi_driver.model import CapacityInfo, ContentSource, VolumeInfo, VolumeStatus
from csi_driver.targets import READ_TIMEOUT, Target, Targets
from nvme_target import dhchap, validate
from nvme_target.model import Capacity, Export, Source, Volume
from sluice_common.units import GiB, MiB, round_up
from sluice_common.errors import (
    AlreadyExists, InUse, InvalidArgument, NoSpace, NotFound, OutOfRange, SluiceError,
)

log = structlog.get_logger(__name__)
DEFAULT_SIZE = 1 * GiB
XFS_MIN_SIZE = 300 * MiB  # mkfs.xfs refuses anything smaller
TARGET_KEY = "csi.sluice.dev/target"
QOS_PREFIX = "qos."


class ControllerService:
    def __init__(self, targets: Targets, inflight: InFlight | None = None, asker: Asker | None = None,
                 max_volumes_per_node: int = 256, default_auth: str = "bidirectional",
                 homes: Homes | None = None) -> None:
        """`max_volumes_per_node`: publications one node may have across all targets
        (the node plugin's --max-volumes-per-node). `default_auth`: DH-HMAC-CHAP for
        volumes whose StorageClass has no nvme.auth. `homes`: sealed by a background
        sweep (server.py); until then a new name asks every target."""
        self.targets = targets
        self.inflight = inflight or InFlight()
        self.asker = asker or Asker(READ_TIMEOUT)
        self.homes = homes or Homes(targets, self.asker)
        self.max_volumes_per_node = max_volumes_per_node
        self.default_auth = dhchap.check_mode(default_auth, "--default-nvme-auth")
        # publishes of different volumes to one node take turns only to count and claim
        # (at most one attach count, bounded by the asker's deadline), never ABORTED
        self.attaching = Reservations(wait=2 * (2 * self.asker.timeout + 1.0))

    # ----------------------------------------------------------------- create
    def create_volume(self, name: str, required: int, limit: int, caps: list[Capability],
                      parameters: Mapping[str, str], source: ContentSource | None = None,
                      requisite: Sequence[Mapping[str, str]] = (),
                      preferred: Sequence[Mapping[str, str]] = (),
                      mutable: Mapping[str, str] | None = None) -> VolumeInfo:
        validate.name(name)
        require_supported(caps, "volume_capabilities")
        _check_range(required, limit)
        wanted = params.parse(parameters)
        limits = wanted.qos.merged(params.parse_mutable(mutable or {}))
        params.check_policy(limits, "parameters")
        with self.inflight.guard(f"volume-name:{name}"):
            origin = self._origin(source) if source else None
            order = placement.candidates(name, placement.eligible(list(self.targets), wanted.pool, requisite),
                                         preferred)
            if origin is not None:  # a clone lives with its source
                order = [origin[0], *(t for t in order if t is not origin[0])]
            sizes = _Sizes(required, limit, caps, origin[2] if origin else None)
            everyone = list(self.targets)
            where = locate(self.asker, name, order, everyone,
                           lambda t, cap: t is order[0] if origin else cap.available_bytes >= sizes.of(cap),
                           sealed=self.homes.sealed)
            if isinstance(where, Found):
                self._existing(where, required, limit, wanted, caps, source, requisite)
                return self._info(where.target, self._limit(where.target, where.volume, limits))
            if where.target is None:
                raise NoSpace("no target with room satisfies the pool and topology requirements")
            point(self.asker, name, where.target, everyone)
            metadata = wanted.as_params() | {access.CAPABILITIES_KEY: access.encode(caps)}
            vol = where.target.backend.create_volume(name, sizes.of(where.capacity), metadata,
                                                     origin[1] if origin else None)
            log.info("volume placed", target=where.target.id, volume_id=ids.join(where.target.id, vol.id))
            return self._info(where.target, self._limit(where.target, vol, limits))

    @staticmethod
    def _limit(target: Target, vol: Volume, limits: params.QoS) -> Volume:
        """Give a new volume its limits at the target. Limits set before (a retry, or a
        ModifyVolume since) are the target's to keep: a retried create never resets them."""
        if vol.qos is None and not limits.empty:
            vol = target.backend.set_qos(vol.id, limits)
        return vol

    def _existing(self, found: Found, required: int, limit: int, wanted: params.VolumeParams,
                  caps: list[Capability], source: ContentSource | None,
                  requisite: Sequence[Mapping[str, str]]) -> VolumeInfo:
        target, vol = found.target, found.volume
        info = self._info(target, vol)
        if vol.size_bytes < required or (limit and vol.size_bytes > limit):
            raise AlreadyExists(f"volume {vol.name!r} exists with {vol.size_bytes} bytes, "
                                f"outside the requested capacity_range")
        if access.user_metadata(vol.metadata) != wanted.as_params():
            raise AlreadyExists(f"volume {vol.name!r} exists with other parameters")
        if info.source != source:
            raise AlreadyExists(f"volume {vol.name!r} exists with another content source")
        if not access.covers(vol.metadata, caps):
            raise AlreadyExists(f"volume {vol.name!r} exists for volume_capabilities "
                                f"{vol.metadata[access.CAPABILITIES_KEY]}, not {access.encode(caps)}")
        if requisite and not any(target.serves(seg) for seg in requisite):
            raise AlreadyExists(f"volume {vol.name!r} exists on target {target.id}, outside the "
                                f"accessibility_requirements")
        return info

    def _origin(self, source: ContentSource) -> tuple[Target, Source, int]:
        """The source's target, its backend reference and its size."""
        if source.kind == "snapshot":
            target_id, snap_id = ids.split_snapshot(source.id, "volume_content_source.snapshot.snapshot_id")
            target = self.targets.get(target_id, f"snapshot {source.id}")
            return target, Source("snapshot", snap_id), target.reads.get_snapshot(snap_id).size_bytes
        target_id, vol_id = ids.split_volume(source.id, "volume_content_source.volume.volume_id")
        target = self.targets.get(target_id, f"volume {source.id}")
        return target, Source("volume", vol_id), target.reads.get_volume(vol_id).size_bytes

    # ----------------------------------------------------------- the rest
    def delete_volume(self, volume_id: str) -> None:
        _require(volume_id, "volume_id")
        try:
            target_id, vol_id = ids.split_volume(volume_id)
        except NotFound:
            return
        if target_id not in self.targets:
            log.error("delete of a volume on a target that is no longer configured: answering OK, but its "
                      "storage may be leaked there", volume_id=volume_id, target=target_id, possible_leak=True)
            metrics.orphaned_delete(target_id)
            return
        target = self.targets.get(target_id, f"volume {volume_id}")
        with self.inflight.guard(f"volume:{volume_id}"):
            export = target.reads.get_export(vol_id)
            if export is not None and export.hosts:
                raise InUse(f"volume {volume_id} is published to {sorted(export.hosts)}")
            target.backend.delete_volume(vol_id, unexport=True)

    def expand_volume(self, volume_id: str, required: int, limit: int,
                      cap: Capability | None) -> tuple[int, bool]:
        _require(volume_id, "volume_id")
        if required <= 0 and limit <= 0:
            raise InvalidArgument("capacity_range is required")
        _check_range(required, limit)
        target, vol_id = self._resolve(volume_id)
        with self.inflight.guard(f"volume:{volume_id}"):
            unit = target.reads.capacity().allocation_unit_bytes
            size = round_up(required or limit, unit)
            if limit and size > limit:
                raise OutOfRange(f"capacity_range: {size} bytes (rounded) exceed limit_bytes {limit}")
            current = target.reads.get_volume(vol_id).size_bytes
            if size < current:
                raise OutOfRange(f"capacity_range: volumes only grow ({current} bytes now, {size} asked)")
            vol = target.backend.expand_volume(vol_id, size)
        node_expansion = not (cap is not None and cap.access_type == "block")
        return vol.size_bytes, node_expansion

    def modify_volume(self, volume_id: str, mutable: Mapping[str, str]) -> params.QoS:
        """Change a live volume's limits at its target. Nodes that have it published watch
        the target and apply the new limits to the pods' cgroups within seconds."""
        _require(volume_id, "volume_id")
        if not mutable:
            raise InvalidArgument("mutable_parameters is required")
        change = params.parse_mutable(mutable)
        target, vol_id = self._resolve(volume_id)
        with self.inflight.guard(f"volume:{volume_id}"):
            vol = target.backend.get_volume(vol_id)
            limits = vol.limits.merged(change)
            params.check_policy(limits)
            if vol.qos != limits:
                vol = target.backend.set_qos(vol_id, limits)
        log.info("volume limits changed", volume_id=volume_id, **limits.as_params())
        return vol.limits

    def get_volume(self, volume_id: str) -> tuple[VolumeInfo, VolumeStatus]:
        _require(volume_id, "volume_id")
        target, vol_id = self._resolve(volume_id)
        vol = target.reads.get_volume(vol_id)
        return self._info(target, vol), _status(vol, target.reads.get_export(vol_id))

    def list_volumes(self, max_entries: int, token: str) -> tuple[list[tuple[VolumeInfo, VolumeStatus]], str]:
        entries, next_token = listing.page(list(self.targets), max_entries, token)
        return [(self._info(t, vol), _status(vol, export)) for t, vol, export in entries], next_token

    def validate_capabilities(self, volume_id: str, caps: list[Capability], context: Mapping[str, str],
                              parameters: Mapping[str, str]) -> str | None:
        """None when every capability (and the given context/parameters) fits the volume,
        else why not."""
        _require(volume_id, "volume_id")
        if not caps:
            raise InvalidArgument("volume_capabilities is required")
        target, vol_id = self._resolve(volume_id)
        info = self._info(target, target.reads.get_volume(vol_id))
        for cap in caps:
            reason = unsupported(cap)
            if reason:
                return reason
        fixed = {k: v for k, v in info.context.items() if not k.startswith(QOS_PREFIX)}
        if context and {k: v for k, v in context.items() if not k.startswith(QOS_PREFIX)} != fixed:
            return "volume_context does not match the volume"
        if parameters and {k: v for k, v in params.parse(parameters).as_params().items()
                           if not k.startswith(QOS_PREFIX)} != {k: v for k, v in fixed.items() if k != TARGET_KEY}:
            return "parameters do not match the volume"
        return None

    def capacity(self, segment: Mapping[str, str] | None, parameters: Mapping[str, str],
                 caps: list[Capability]) -> CapacityInfo:
        wanted = params.parse(parameters)
        if any(unsupported(c) for c in caps):
            return CapacityInfo(0, 0)
        matching = [t for t in self.targets.up()
                    if (wanted.pool is None or t.config.pool == wanted.pool)
                    and (segment is None or t.serves(segment))]
        available = [t.reads.capacity().available_bytes for t in matching]
        return CapacityInfo(sum(available), max(available, default=0))

    # ----------------------------------------------------------------- publish
    def publish(self, volume_id: str, node_id: str, cap: Capability | None, readonly: bool) -> dict[str, str]:
        _require(volume_id, "volume_id")
        _require(node_id, "node_id")
        if cap is None:
            raise InvalidArgument("volume_capability is required")
        require_supported([cap], "volume_capability")
        target, vol_id = self._resolve(volume_id)
        try:
            validate.host_nqn(node_id)
        except InvalidArgument:
            raise NotFound(f"node {node_id!r} not found: node ids are host NQNs") from None
        vol = target.reads.get_volume(vol_id)
        readonly = readonly or cap.read_only
        auth = vol.metadata.get(params.AUTH) or self.default_auth
        with self.inflight.guard(f"volume:{volume_id}"):
            export = target.reads.get_export(vol_id)
            if not access.check_publish(volume_id, export, node_id, cap, readonly):
                with self.attaching.claim(node_id, volume_id, functools.partial(self._check_attach_limit, node_id)):
                    export = target.backend.add_host(vol_id, node_id, readonly=readonly, auth=auth)
        log.info("published", volume_id=volume_id, node_id=node_id, readonly=readonly, auth=auth)
        return publish_context(export, readonly, vol.limits) | {params.AUTH: auth}

    def _check_attach_limit(self, node_id: str, pending: frozenset[str] = frozenset()) -> None:
        """RESOURCE_EXHAUSTED when the node has its --max-volumes-per-node publications
        already: those on every target that answers (a silent one is logged) and the
        `pending` ones (volume ids) other publishes are adding now."""
        answers = self.asker.ask(list(self.targets), lambda t: t.reads.list_exports())
        published = set(pending)
        for target_id, exports in answers.items():
            if isinstance(exports, SluiceError):
                log.warning("attach count misses a target", target=target_id, node_id=node_id, error=str(exports))
                continue
            published.update(ids.join(target_id, x.volume_id) for x in exports if node_id in x.hosts)
        count = len(published)
        if count >= self.max_volumes_per_node:
            raise NoSpace(f"node {node_id} has {count} volumes published or being published, its limit "
                          f"(--max-volumes-per-node) is {self.max_volumes_per_node}")

    def unpublish(self, volume_id: str, node_id: str) -> None:
        _require(volume_id, "volume_id")
        try:
            target, vol_id = self._resolve(volume_id)
        except NotFound:
            return
        with self.inflight.guard(f"volume:{volume_id}"):
            if node_id:
                export = target.backend.remove_host(vol_id, node_id)
                if export is not None and not export.hosts:
                    target.backend.unexport_volume(vol_id)
            else:
                target.backend.unexport_volume(vol_id)
        log.info("unpublished", volume_id=volume_id, node_id=node_id)

    # ---------------------------------------------------------------- helpers
    def _resolve(self, volume_id: str) -> tuple[Target, str]:
        target_id, vol_id = ids.split_volume(volume_id)
        return self.targets.get(target_id, f"volume {volume_id}"), vol_id

    def _info(self, target: Target, vol: Volume) -> VolumeInfo:
        source = None
        if vol.source is not None:
            source = ContentSource(vol.source.kind, ids.join(target.id, vol.source.id))
        context = access.user_metadata(vol.metadata)
        if vol.qos is not None:  # the limits in force at the target, which may have changed since
            context = {k: v for k, v in context.items() if not k.startswith(QOS_PREFIX)} | vol.qos.as_params()
        return VolumeInfo(
            volume_id=ids.join(target.id, vol.id), capacity_bytes=vol.size_bytes,
            context={**context, TARGET_KEY: target.id}, source=source,
            topology=(dict(target.topology),) if target.topology else (),
        )


def publish_context(export: Export, readonly: bool, limits: params.QoS) -> dict[str, str]:
    """Everything the node needs to connect, as the CSI publish_context, and the limits
    in force now (the node's starting point; it then watches the target for changes)."""
    portals = ",".join(f"[{p.traddr}]:{p.trsvcid}" if p.adrfam == "ipv6" else f"{p.traddr}:{p.trsvcid}"
                       for p in export.portals)
    return {"nvme.transport": "tcp", "nvme.portals": portals, "nvme.subnqn": export.subsystem_nqn,
            "nvme.nsUUID": export.namespace_uuid, "readonly": "true" if readonly else "false",
            **limits.as_params()}


def _status(vol: Volume, export: Export | None) -> VolumeStatus:
    """Published nodes and the condition the target reports, with the export state."""
    hosts = tuple(sorted(export.hosts)) if export else ()
    exported = f"exported to {len(hosts)} host(s)" if export else "not exported"
    if vol.condition:
        return VolumeStatus(hosts, abnormal=True, message=f"{vol.condition} ({exported})")
    return VolumeStatus(hosts, message=f"volume is healthy ({exported})")


@dataclass(frozen=True)
class _Sizes:
    """The size a new volume gets on a target with a given allocation unit."""

    required: int
    limit: int
    caps: list[Capability]
    origin_size: int | None  # a clone or restore: the source's size is the default

    def of(self, capacity: Capacity) -> int:
        default = self.origin_size or min(self.limit or DEFAULT_SIZE, DEFAULT_SIZE)
        unit = capacity.allocation_unit_bytes
        size = round_up(max(self.required or default, _min_size(self.caps)), unit)
        if self.limit and size > self.limit:
            raise OutOfRange(f"capacity_range: {self.required or self.limit} bytes rounded up to the "
                             f"{unit}-byte unit exceed limit_bytes {self.limit}")
        return size


def _min_size(caps: list[Capability]) -> int:
    return XFS_MIN_SIZE if any(c.access_type == "mount" and c.fs == "xfs" for c in caps) else 0


def _require(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required")


def _check_range(required: int, limit: int) -> None:
    if required < 0 or limit < 0:
        raise InvalidArgument("capacity_range: required_bytes and limit_bytes must not be negative")
    if limit and required > limit:
        raise OutOfRange(f"capacity_range: required_bytes {required} exceeds limit_bytes {limit}")
