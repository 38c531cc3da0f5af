"""Target-side limits of the SPDK backend (mixed into SpdkBackend).

SPDK changes a bdev's limits only while the bdev has an I/O channel, that is while it is
exported: on an unexported lvol that already has limits, every bdev_set_qos_limit (also
one that clears them) answers -EAGAIN, and right after an export SPDK may still be
setting QoS up on the new channel. So the desired limits live in the state file; they
are applied when the volume is exported (nothing is sent when SPDK's
assigned_rate_limits already match), and a change SPDK does not take yet is retried by
the replay loop. -EAGAIN is Unavailable (retryable), never INTERNAL.
"""

from __future__ import annotations

import time
from dataclasses import replace

import structlog

from nvme_target import validate
from nvme_target.model import QoS, Volume
from nvme_target.protect import effective
from nvme_target.spdk.qos import spdk_limits
from sluice_common.errors import NotFound, SluiceError, Unavailable

log = structlog.get_logger(__name__)


class SpdkLimits:
    def set_qos(self, volume_id: str, qos: QoS) -> Volume:
        validate.volume_id(volume_id)
        with self._lock:
            vol = self.get_volume(volume_id)
            self.state.put_volume(volume_id, {**self.state.volumes[volume_id], "qos": qos.as_params()})
            self.changes.bump()
            if volume_id in self.state.exports:
                try:
                    self._set_limits(volume_id)
                except Unavailable:  # kept: the replay loop applies them when SPDK takes them
                    self.replay.pending_limits.add(volume_id)
                    raise
            else:
                log.info("limits kept; applied on the target when the volume is exported", volume_id=volume_id)
        return replace(vol, qos=qos)

    def apply_ceiling(self, volume_id: str, ceiling: QoS | None) -> None:
        """Latency protection's dynamic ceiling on the target too (kept in memory only: an
        agent restart fails open to the stored limits). SPDK takes the lower of the two."""
        with self._lock:
            ceilings = self.__dict__.setdefault("_ceilings", {})
            if ceilings.get(volume_id) == ceiling or volume_id not in self.state.volumes:
                return
            ceilings[volume_id] = ceiling
            if volume_id in self.state.exports:
                try:
                    self._set_limits(volume_id)
                except Unavailable:
                    self.replay.pending_limits.add(volume_id)

    def _wanted_limits(self, vol_id: str) -> dict[str, int] | None:
        rec = self.state.volumes.get(vol_id)
        ceilings = self.__dict__.get("_ceilings", {})
        if rec is None or (rec.get("qos") is None and vol_id not in ceilings):
            return None
        return spdk_limits(effective(QoS.from_params(rec.get("qos") or {}), ceilings.get(vol_id)))

    def _set_limits(self, vol_id: str) -> None:
        """Make SPDK enforce the volume's desired limits (it must be exported: SPDK takes
        a change only on a bdev with an I/O channel). Nothing is sent when its
        assigned_rate_limits already match. SPDK answers -EAGAIN (Unavailable) while
        it is still setting up QoS on a new channel: retried for a few seconds."""
        want = self._wanted_limits(vol_id)
        if want is None:
            return
        deadline = time.monotonic() + self.config.limit_retry_seconds
        while True:
            try:
                if self.target_limits(vol_id) != want:
                    self._call("bdev_set_qos_limit", name=self._alias(vol_id), **want)
                    log.info("target limits in force", volume_id=vol_id, **self.target_limits(vol_id))
                self.replay.pending_limits.discard(vol_id)
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _limits_at_export(self, vol_id: str) -> None:
        """After an export: its limits; when SPDK does not take them yet, the replay
        loop retries (the export itself stands)."""
        try:
            self._set_limits(vol_id)
        except Unavailable as exc:
            self.replay.pending_limits.add(vol_id)
            log.warning("limits not applied yet; retrying in the background", volume_id=vol_id, error=str(exc))

    def retry_limits(self, vol_id: str) -> None:
        """The replay loop's retry of limits SPDK did not take before."""
        with self._lock:
            if vol_id not in self.state.exports or vol_id not in self.state.volumes:
                self.replay.pending_limits.discard(vol_id)
                return
            try:
                self._set_limits(vol_id)
            except SluiceError as exc:
                log.warning("limits still not applied", volume_id=vol_id, error=str(exc))

    def target_limits(self, volume_id: str) -> dict[str, int]:
        """What SPDK enforces now (assigned_rate_limits): after its rounding."""
        bdev = self._bdev(volume_id)
        if bdev is None:
            raise NotFound(f"volume {volume_id} not found")
        return dict(bdev["assigned_rate_limits"])

