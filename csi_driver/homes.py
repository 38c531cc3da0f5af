"""Name homes: where the controller records which target a volume name was placed on.

A name's home is its rendezvous winner over every configured target
(placement.home). Invariant, for the configured target set: every volume that lives on
a target other than its name's home has a pointer to that target on the home
(nvme_target/pointers.py). With it, "the home holds neither the name nor a pointer"
proves the name exists nowhere, so a lookup costs one round trip (two when it follows a
pointer) and a target's outage blocks only the names homed there (or pointed to it).

Who keeps the invariant:
- every create this process makes off the home writes the pointer first (locate.py);
- volumes made before (by an older version, by another target set — adding or removing
  a target moves some names' homes — or by hand) are covered by `seal`, a sweep that
  lists every target's volumes and writes each stray one's pointer at its home.
Until a sweep has completed in this process for the current target set, lookups do
not trust a missing pointer and ask every target (the stray check), as before. The
sweep runs at start and is retried in the background until every target has answered;
it is never trusted across a restart, so a target set changed and changed back cannot
leave a stale "complete" mark behind.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import structlog

from csi_driver import placement
from csi_driver.lookup import Asker
from csi_driver.targets import Target, Targets
from sluice_common.errors import SluiceError

log = structlog.get_logger(__name__)
PAGE = 500
BATCH = 1000  # pointers per PointNames call


class Homes:
    def __init__(self, targets: Targets, asker: Asker) -> None:
        self.targets = targets
        self.asker = asker
        self._sealed_for = ""
        self._lock = threading.Lock()

    @property
    def sealed(self) -> bool:
        """Whether every stray volume has its pointer (for the current target set)."""
        return self._sealed_for == placement.fingerprint(list(self.targets))

    def seal(self) -> bool:
        """Sweep: write the pointer of every volume that lives away from its home.
        False (logged) when a target did not answer; retry later."""
        with self._lock:
            if self.sealed:
                return True
            everyone = list(self.targets)
            mark = placement.fingerprint(everyone)
            try:
                strays = self._strays(everyone)
                self._point(strays)
            except SluiceError as exc:
                log.warning("name homes not sealed yet: new names ask every target", error=str(exc))
                return False
            self._sealed_for = mark
            log.info("name homes sealed: a new name asks its home only",
                     targets=len(everyone), strays=sum(len(p) for p in strays.values()))
            return True

    def _strays(self, everyone: Sequence[Target]) -> dict[str, dict[str, str]]:
        """home id -> {name: target id} for every volume not on its home."""
        strays: dict[str, dict[str, str]] = {}
        for target_id, names in self._names(everyone).items():
            for name in names:
                home = placement.home(name, everyone)
                if home.id != target_id:
                    strays.setdefault(home.id, {})[name] = target_id
        return strays

    def _names(self, everyone: Sequence[Target]) -> dict[str, list[str]]:
        """Every target's volume names, walked a page per target per round."""
        names: dict[str, list[str]] = {t.id: [] for t in everyone}
        after = {t.id: "" for t in everyone}
        pending = list(everyone)
        while pending:
            pages = self.asker.all(pending, lambda t: t.reads.list_volumes(after[t.id], PAGE),
                                   "where existing volumes live")
            for target in pending:
                names[target.id] += [v.name for v in pages[target.id]]
                after[target.id] = pages[target.id][-1].id if pages[target.id] else ""
            pending = [t for t in pending if len(pages[t.id]) == PAGE]
        return names

    def _point(self, strays: dict[str, dict[str, str]]) -> None:
        homes = [self.targets.get(home_id, "home") for home_id in strays]
        for target in homes:
            items = sorted(strays[target.id].items())
            for i in range(0, len(items), BATCH):
                batch = dict(items[i:i + BATCH])
                self.asker.all([target], lambda t, batch=batch: t.reads.point_names(batch),
                                "the name pointers")


def keep_sealed(homes: Homes, interval: float) -> threading.Event:
    """Seal now, in the background, and check again every `interval` seconds (a
    no-op once sealed for the current target set); set the returned event to stop."""
    stop = threading.Event()

    def run() -> None:
        while True:
            try:
                homes.seal()
            except Exception:  # noqa: BLE001 - a background loop logs and goes on
                log.exception("sealing the name homes failed")
            if stop.wait(interval):
                return

    threading.Thread(target=run, name="name-homes", daemon=True).start()
    return stop
