"""Fail-closed name lookup before a create: find where a volume name already lives, or
choose where it may be made, without ever guessing about a target that did not answer.

Sealed (csi_driver/homes.py: every volume away from its home has a pointer there):
ask the name's home alone; it answers with the volume, or the targets it was placed on
(each then asked), or nothing — which proves the name is new. One round trip in the
common case; a silent home fails the call UNAVAILABLE naming it, and a name homed on
a live target does not care which other target is down. The new volume then goes to
the first candidate (placement order) that answers with room, asked one by one; a
silent candidate is passed over, which is safe because the home's pointer, written before the create,
is what a retry follows.

Not sealed yet (just started, or a target did not answer the sweep): round 1 walks the
candidate order a window at a time asking whether each holds the name and how much
room it has; a name found ends the lookup. Round 2, the stray check, asks every other
configured target and needs them all, because without the sweep a name may sit beyond
its first candidate (placed before pointers existed, by another target set, or with
other topology requirements) and absence can only be proven by asking.

Either way the create then writes the pointer on the home first when it goes elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from csi_driver import placement
from csi_driver.lookup import Asker, require
from csi_driver.targets import Target
from nvme_target.model import Capacity, Volume
from sluice_common.errors import SluiceError, Unavailable

log = structlog.get_logger(__name__)
WINDOW = 4


@dataclass(frozen=True)
class Found:
    target: Target
    volume: Volume


@dataclass(frozen=True)
class Choice:
    target: Target | None   # None: no candidate has room
    capacity: Capacity | None = None


def locate(asker: Asker, name: str, order: Sequence[Target], everyone: Sequence[Target],
           fits: Callable[[Target, Capacity], bool], sealed: bool = False) -> Found | Choice:
    """Where `name` lives (on any of `everyone`), or the first target of `order` (the
    eligible ones, in candidate order) that `fits` it."""
    if sealed:
        return _by_home(asker, name, order, everyone, fits)
    return _by_asking(asker, name, order, everyone, fits)


def point(asker: Asker, name: str, target: Target, everyone: Sequence[Target]) -> None:
    """Before `name` is created on `target`: record it on the name's home (when that is
    another target). A silent home fails the call and nothing is created."""
    home = placement.home(name, everyone)
    if home.id != target.id:
        asker.all([home], lambda t: t.reads.point_names({name: target.id}),
                  f"where volume name {name!r} goes (target {home.id} is its home)")


# ------------------------------------------------------------------ sealed
def _by_home(asker: Asker, name: str, order: Sequence[Target], everyone: Sequence[Target],
             fits: Callable[[Target, Capacity], bool]) -> Found | Choice:
    home = placement.home(name, everyone)
    what = f"whether volume name {name!r} exists (target {home.id} is its home)"
    volume, placed_on = asker.all([home], lambda t: t.reads.find_name(name), what)[home.id]
    if volume is not None:
        return Found(home, volume)
    pointed = _targets(placed_on, home, everyone, name)
    if pointed:
        answers = asker.all(pointed, lambda t: t.reads.find_volume(name), f"whether volume name {name!r} exists")
        for target in pointed:
            if answers[target.id] is not None:
                return Found(target, answers[target.id])
    first = [t for t in pointed if t in order]  # a create still running there lands on the same volume
    return _place(asker, name, [*first, *(t for t in order if t not in first)], fits)


def _targets(ids: Sequence[str], home: Target, everyone: Sequence[Target], name: str) -> list[Target]:
    by_id = {t.id: t for t in everyone}
    gone = [tid for tid in ids if tid not in by_id]
    if gone:
        log.warning("volume name points to targets no longer configured", name=name, home=home.id, targets=gone)
    return [by_id[tid] for tid in ids if tid in by_id and tid != home.id]


def _place(asker: Asker, name: str, order: Sequence[Target],
           fits: Callable[[Target, Capacity], bool]) -> Choice:
    """The first of `order` that answers with room, asked one at a time (usually the
    first has room: one round trip). Silent ones are passed over, but when none has
    room and some were silent the answer is UNAVAILABLE naming them, not NoSpace."""
    silent: dict[str, object] = {}
    for target in order:
        capacity = asker.ask([target], lambda t: t.reads.capacity())[target.id]
        if isinstance(capacity, SluiceError):
            silent[target.id] = capacity
        elif fits(target, capacity):
            return Choice(target, capacity)
    if any(isinstance(err, Unavailable) for err in silent.values()):
        require(silent, list(silent), f"where volume name {name!r} has room")
    return Choice(None)


# -------------------------------------------------------------- not sealed
def _by_asking(asker: Asker, name: str, order: Sequence[Target], everyone: Sequence[Target],
               fits: Callable[[Target, Capacity], bool]) -> Found | Choice:
    choice, asked = Choice(None), 0
    while asked < len(order) and choice.target is None:
        window = list(order[asked:asked + WINDOW])
        asked += len(window)
        answers = asker.ask(window, lambda t: (t.reads.find_volume(name), t.reads.capacity()))
        found = _found(window, answers)
        if found is not None:
            return found
        choice = _choose(window, answers, fits, name)
    seen = {t.id for t in order[:asked]}
    rest = [t for t in everyone if t.id not in seen]
    if rest:
        answers = asker.all(rest, lambda t: t.reads.find_volume(name), f"whether volume name {name!r} exists")
        for target in rest:
            if answers[target.id] is not None:
                return Found(target, answers[target.id])
    return choice


def _found(window: list[Target], answers: dict) -> Found | None:
    for target in window:
        answer = answers[target.id]
        if isinstance(answer, tuple) and answer[0] is not None:
            return Found(target, answer[0])
    return None


def _choose(window: list[Target], answers: dict, fits, name: str) -> Choice:
    require(answers, [t.id for t in window], f"whether volume name {name!r} exists")
    for target in window:
        capacity = answers[target.id][1]
        if fits(target, capacity):
            return Choice(target, capacity)
    return Choice(None)
