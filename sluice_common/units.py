"""Sizes and the one rounding rule every layer uses (allocation units, SPDK's MiB and
its IOPS steps): round up, never down, so nothing gets less than it asked for."""

from __future__ import annotations

MiB = 1 << 20
GiB = 1 << 30


def round_up(value: int, unit: int) -> int:
    """The smallest multiple of `unit` (1 when 0) that is at least `value`."""
    unit = unit or 1
    return -(-value // unit) * unit


def ceil_div(value: int, unit: int) -> int:
    return -(-value // unit)
