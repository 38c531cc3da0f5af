"""Mounts, read from /proc/self/mountinfo and made with mount(8) — never lazily undone."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sluice_common import runner


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    majmin: str
    fs_type: str
    source: str
    options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def entries() -> list[MountEntry]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        out.append(MountEntry(mountpoint=_unescape(fields[4]), majmin=fields[2], fs_type=tail[0],
                              source=_unescape(tail[1]), options=tuple(fields[5].split(","))))
    return out


def at(path: str) -> MountEntry | None:
    """The topmost mount at `path`, if any."""
    real = os.path.realpath(path)
    found = [e for e in entries() if e.mountpoint == real]
    return found[-1] if found else None


def mount(source: str, target: str, fs_type: str, flags: tuple[str, ...] = ()) -> None:
    opts = ["-o", ",".join(flags)] if flags else []
    runner.run(["mount", "-t", fs_type, *opts, source, target], timeout=300)


def bind(source: str, target: str, read_only: bool = False) -> None:
    runner.run(["mount", "--bind", source, target])
    if read_only:
        runner.run(["mount", "-o", "remount,bind,ro", target])


def umount(target: str) -> None:
    runner.run(["umount", target], timeout=300)
