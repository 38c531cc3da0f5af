"""How every benchmark reports: medians of both sides, their ratio against the goal, and
the raw timings as JSON in the lab's results folder."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path


def report(title: str, sluice: tuple[str, list[float]], by_hand: tuple[str, list[float]], goal: float,
           name: str) -> float:
    (s_label, s_times), (h_label, h_times) = sluice, by_hand
    s, h = statistics.median(s_times), statistics.median(h_times)
    print(f"{title}, {len(s_times)} rounds (lab VM, TCG):")
    print(f"  sluice:  {s_label:<42} median {s * 1000:7.0f} ms")
    print(f"  by hand: {h_label:<42} median {h * 1000:7.0f} ms")
    print(f"  ratio sluice/by-hand = {s / h:.2f}   (goal <= {goal:.2f})")
    out = os.environ.get("LAB_OUT")
    if out:
        Path(out, f"bench-{name}.json").write_text(json.dumps({
            "sluice_median_s": round(s, 3), "by_hand_median_s": round(h, 3), "ratio": round(s / h, 3),
            "goal": goal, "sluice_s": [round(x, 3) for x in s_times],
            "by_hand_s": [round(x, 3) for x in h_times]}, indent=1))
    return s / h
