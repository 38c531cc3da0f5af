"""How a live limit change reaches the node (CSI has no NodeModifyVolume).

The target keeps each volume's limits (ControllerModifyVolume sets them there). The
node keeps one WatchVolumes stream open per target, for the volumes it has published
to pods: the agent sends their limits when the stream opens and again whenever they
change, and the node applies them to the pods' cgroups. When the node's set of volumes
changes (publish, unpublish) the stream is reopened with the new set; when a target
goes away the stream is retried every few seconds, and reopening sends the current
limits, so a change made meanwhile is not lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from csi_driver import ids
from csi_driver.targets import Target, Targets
from nvme_target.model import QoS
from sluice_common.errors import SluiceError

log = structlog.get_logger(__name__)
RETRY_SECONDS = 2.0


class LimitsWatch:
    def __init__(self, targets: Targets, volumes: Callable[[], list[str]],
                 on_limits: Callable[[str, QoS], None],
                 on_condition: Callable[[str, str], None] | None = None,
                 on_ceiling: Callable[[str, QoS | None, str], None] | None = None) -> None:
        """`volumes()`: the CSI volume ids to watch; `on_limits(volume_id, limits)`;
        `on_condition(volume_id, condition)`: the target's Volume.condition ("" healthy);
        `on_ceiling(volume_id, ceiling, reason)`: latency protection's dynamic ceiling
        (None: none). When a target's stream breaks, its volumes' ceilings are dropped
        (fail open to the static caps) until it is back."""
        self.targets = targets
        self.volumes = volumes
        self.on_limits = on_limits
        self.on_condition = on_condition
        self.on_ceiling = on_ceiling
        self._lock = threading.Lock()
        self._generation = 0
        self._stops: dict[str, threading.Event] = {}
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target in self.targets:
            thread = threading.Thread(target=self._run, args=(target,), name=f"limits-watch-{target.id}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def refresh(self) -> None:
        """The set of volumes changed: reopen every stream with the new set."""
        with self._lock:
            self._generation += 1
            for stop in self._stops.values():
                stop.set()

    def close(self) -> None:
        self._closed.set()
        self.refresh()

    def _run(self, target: Target) -> None:
        while not self._closed.is_set():
            try:
                self._stream(target)
            except Exception:  # noqa: BLE001 - the watch must outlive any one bad message
                log.exception("limits watch failed", target=target.id)
                self._fail_open(target)
                self._closed.wait(RETRY_SECONDS)

    def _stream(self, target: Target) -> None:
        with self._lock:
            generation = self._generation
            stop = self._stops[target.id] = threading.Event()
        wanted = [vol_id for vid in self.volumes() if (vol_id := _backend_id(vid, target.id))]
        with self._lock:
            if generation != self._generation:
                return
        if not wanted:
            stop.wait()
            return
        try:
            for vol in target.backend.watch_volumes(wanted, stop):
                volume_id = ids.join(target.id, vol.id)
                self.on_limits(volume_id, vol.limits)
                if self.on_condition is not None:
                    self.on_condition(volume_id, vol.condition)
                if self.on_ceiling is not None:
                    self.on_ceiling(volume_id, vol.ceiling, vol.ceiling_reason)
            if not stop.is_set():  # the agent ended the stream: reopen, gently
                self._fail_open(target)
                self._closed.wait(RETRY_SECONDS)
        except SluiceError as exc:
            log.warning("limits watch interrupted", target=target.id, error=str(exc))
            self._fail_open(target)
            self._closed.wait(RETRY_SECONDS)

    def _fail_open(self, target: Target) -> None:
        """No word from the target: its dynamic ceilings no longer hold (static caps do)."""
        if self.on_ceiling is None:
            return
        for volume_id in self.volumes():
            if _backend_id(volume_id, target.id):
                self.on_ceiling(volume_id, None, "")


def _backend_id(volume_id: str, target_id: str) -> str:
    """The backend id of a volume on this target; "" for another target's or a foreign id."""
    try:
        tid, backend_id = ids.split_volume(volume_id)
    except SluiceError:
        return ""
    return backend_id if tid == target_id else ""
