#!/usr/bin/env python3
"""Print what matters of a lab VM's console after it ran pytest quietly.

    python3 lab/report_tail.py SERIAL_LOG [LINES]

The failures and errors section (whole), then the last LINES lines (the slowest tests
and the summary). Used by `make lab-test` for the VMs that run side by side, whose
consoles would otherwise interleave.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SECTION = re.compile(r"^\[\s*[\d.]+\] =+ (FAILURES|ERRORS) =+$")


def main(log: Path, lines: int) -> None:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        print(f"lab/report_tail.py: no console log at {log}: {e}")
        return
    start = next((i for i, line in enumerate(text) if SECTION.match(line)), None)
    tail_from = max(len(text) - lines, 0)
    if start is not None and start < tail_from:
        print("\n".join(text[start:tail_from]))
    print(f"----- {log} (last {lines} lines) -----")
    print("\n".join(text[tail_from:]))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 45)
