"""Where a new volume may go and in which order its name is looked for.

The eligible targets are those of the requested pool that serve one of the requisite
topologies, whatever their health (a silent target must still be asked, not skipped).
Their order for a name is deterministic: targets serving an earlier preferred topology
first (in the CO's order), and within that rendezvous (highest-random-weight) hashing
of (name, target id). The same name always meets the same order, adding or removing a
target moves only the names whose first choice it is, and names spread evenly.

A name's home is its first choice among ALL configured targets, whatever their pool,
topology or health: the one place that knows where the name went (csi_driver/homes.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from csi_driver.targets import Target


def eligible(targets: Sequence[Target], pool: str | None,
             requisite: Sequence[Mapping[str, str]]) -> list[Target]:
    return [t for t in targets
            if (pool is None or t.config.pool == pool)
            and (not requisite or any(t.serves(seg) for seg in requisite))]


def candidates(name: str, targets: Sequence[Target],
               preferred: Sequence[Mapping[str, str]] = ()) -> list[Target]:
    """`targets` in the order a volume named `name` is placed on them."""
    def rank(target: Target) -> tuple[int, bytes]:
        first = next((i for i, seg in enumerate(preferred) if target.serves(seg)), len(preferred))
        return first, score(name, target.id)

    return sorted(targets, key=rank)


def home(name: str, targets: Sequence[Target]) -> Target:
    """The name's home: the rendezvous winner over every configured target."""
    return min(targets, key=lambda t: score(name, t.id))


def fingerprint(targets: Sequence[Target]) -> str:
    """Identifies a configured target set: any change moves some names' homes."""
    return hashlib.sha256("\0".join(sorted(t.id for t in targets)).encode()).hexdigest()[:16]


def score(name: str, target_id: str) -> bytes:
    """Rendezvous weight, inverted so that sorting ascending puts the winner first."""
    digest = hashlib.sha256(f"{name}\0{target_id}".encode()).digest()
    return bytes(255 - b for b in digest)
