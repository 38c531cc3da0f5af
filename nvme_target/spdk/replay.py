"""Putting a restarted nvmf_tgt back the way Sluice wants it, without waiting to be asked.

nvmf_tgt forgets transports, subsystems, namespaces, hosts, listeners and QoS limits when
it restarts (lvols persist on the base bdev). The backend's state file is the desired
state; `Replay.run()` puts it back:

- the base first (TCP transport, the aio bdev, the lvstore): without it nothing else can
  be done, so a failure here is one problem ("target") and the run stops;
- then each export on its own (subsystem, namespace, listeners, hosts, and its limits):
  one that fails is recorded (health, log once per change) and the others are restored.

Every step looks before it acts, so a run against a target that lost nothing changes
nothing (and SPDK logs no "already exists" errors). A background loop (`start()`) asks a
cheap question (nvmf_get_transports) every `interval` seconds; a target that lost its
transport, or a new connection to the socket (a new process), is replayed at once.
Failed objects and limits SPDK could not take yet (-EAGAIN) are retried on later ticks.
The loop catches and logs everything and keeps going.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import structlog

from sluice_common.errors import SluiceError

if TYPE_CHECKING:
    from nvme_target.spdk.backend import SpdkBackend

log = structlog.get_logger(__name__)
TARGET = "target"  # the problem key of the base (transport, base bdev, lvstore)


class Replay:
    def __init__(self, backend: SpdkBackend, interval: float = 1.0, retry_every: float = 5.0) -> None:
        self.backend = backend
        self.interval = interval
        self.retry_every = retry_every
        self.synced_connection = -1      # the RPC connection the last base replay ran on
        self.problems: dict[str, str] = {}  # object -> why it could not be restored
        self.pending_limits: set[str] = set()  # exported volumes whose limits SPDK did not take yet
        self.running = False
        self._runner = 0  # the thread running the replay
        self._last_run = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ the run
    def needed(self) -> bool:
        """A new connection may be a new nvmf_tgt: look again (not from inside a run)."""
        return not self.running and self.backend.rpc.connections != self.synced_connection

    def settle(self) -> bool:
        """After a call failed: True when it is worth retrying, once a replay that may
        have been the cause's cure is done (a new connection, or another thread's
        replay in progress). False inside the replay itself."""
        if self.running and self._runner == threading.get_ident():
            return False
        if self.running:
            with self.backend._lock:  # wait for it
                return True
        if self.needed():
            self.run()
            return True
        return False

    def run(self, force: bool = False) -> bool:
        """Replay the desired state; True when everything is in place. Never raises a
        SluiceError: what failed is in `problems`."""
        with self.backend._lock:
            if self.running or (not force and not self.needed()):
                return not self.problems
            self.running, self._runner = True, threading.get_ident()
            try:
                self._run()
            finally:
                self.running = False
                self._last_run = time.monotonic()
        return not self.problems

    def _run(self) -> None:
        problems: dict[str, str] = {}
        try:
            connection = self.backend.ensure_base()
        except SluiceError as exc:
            self._report({TARGET: f"SPDK base not restored: {exc}"})
            return
        subsystems = {s["nqn"]: s for s in self.backend.rpc.call("nvmf_get_subsystems")}
        for vol_id, hosts in sorted(self.backend.state.exports.items()):
            try:
                self.backend.restore_export(vol_id, hosts, subsystems)
            except SluiceError as exc:
                problems[f"export {vol_id}"] = f"export of {vol_id} not restored: {exc}"
        self.synced_connection = connection
        self._report(problems)

    def _report(self, problems: dict[str, str]) -> None:
        """Log each problem when it appears or changes, and once when it is gone."""
        for key, why in problems.items():
            if self.problems.get(key) != why:
                log.error("SPDK replay: object not restored; the others are", object=key, error=why)
        for key in self.problems.keys() - problems.keys():
            log.info("SPDK replay: object restored", object=key)
        self.problems = problems

    # -------------------------------------------------------------- the loop
    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="spdk-replay", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive anything
                log.exception("SPDK replay loop: tick failed; continuing")

    def tick(self) -> None:
        """One look: replay a target that lost its state, retry what failed before."""
        asked = time.monotonic()
        try:
            lost = not self.backend.has_transport()
        except SluiceError as exc:
            with self.backend._lock:
                if self._last_run < asked:  # no replay since: still true
                    self._report({**self.problems, TARGET: f"SPDK not answering: {exc}"})
            return
        retry_due = self.problems and time.monotonic() - self._last_run >= self.retry_every
        if lost or self.needed() or retry_due:
            if lost:
                log.warning("SPDK target lost its state (restarted?): replaying it")
            self.run(force=True)
        for vol_id in sorted(self.pending_limits):
            self.backend.retry_limits(vol_id)
