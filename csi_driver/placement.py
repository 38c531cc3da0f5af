"""Where a new volume goes: a healthy target of the requested pool that serves one of
the requisite topologies; targets serving an earlier preferred topology first (in the
CO's order), and among equals the one with the most room."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from csi_driver.targets import Target
from nvme_target.model import Capacity


def eligible(targets: Sequence[Target], pool: str | None,
             requisite: Sequence[Mapping[str, str]]) -> list[Target]:
    return [t for t in targets
            if (pool is None or t.config.pool == pool)
            and (not requisite or any(t.serves(seg) for seg in requisite))]


def order(scored: Sequence[tuple[Target, Capacity]],
          preferred: Sequence[Mapping[str, str]]) -> list[tuple[Target, Capacity]]:
    def rank(item: tuple[Target, Capacity]) -> tuple[int, int]:
        target, capacity = item
        first = next((i for i, seg in enumerate(preferred) if target.serves(seg)), len(preferred))
        return first, -capacity.available_bytes

    return sorted(scored, key=rank)
