"""Fail-closed name lookup before a create: find where a volume name already lives, or
choose where it may be made, without ever guessing about a target that did not answer.

Round 1 walks the name's candidate order (placement.candidates) a window at a time,
asking each candidate in parallel whether it holds the name and how much room it has.
A name found in round 1 ends the lookup: a retry of a placed volume needs answers only
from its home's window. Otherwise the first candidate with room is chosen, once every
candidate asked so far has answered; a silent one fails the call (UNAVAILABLE naming
it) and nothing is created.

Round 2, the stray check, asks every other configured target in parallel and needs
them all: a name can sit beyond its first candidate with room when it was placed
before rendezvous ordering (the old "most room" policy), when capacities changed
since (an earlier candidate was full then), when targets were added or removed, or
when the CO retries the name with other topology requirements (a pod rescheduled to
another zone): without a record of every name, absence can only be proven by asking.
Only a new name (or one found there) pays for this round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from csi_driver.lookup import Asker, require
from csi_driver.targets import Target
from nvme_target.model import Capacity, Volume

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
           fits: Callable[[Target, Capacity], bool]) -> Found | Choice:
    """Where `name` lives (on any of `everyone`), or the first target of `order` (the
    eligible ones, in candidate order) that `fits` it."""
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
