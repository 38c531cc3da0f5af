"""The one way Sluice runs an external tool.

Every command gets a timeout (the child is killed when it expires), `LC_ALL=C`, and no
stdin; a non-zero exit raises CommandFailed carrying the exit code and stderr. Callers
decide by exit code or by the tool's JSON output, never by matching its message text.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from collections.abc import Sequence

import structlog

from sluice_common.errors import BackendFailure

log = structlog.get_logger(__name__)
DEFAULT_TIMEOUT = 120.0


class CommandFailed(BackendFailure):
    """A command exited non-zero or timed out."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        gist = lines[:2] + lines[-1:] if len(lines) > 3 else lines  # tools say why first, then usage
        super().__init__(f"{argv[0]} failed with exit code {returncode}: {' / '.join(gist)}",
                         command=" ".join(argv[:3]), exit_code=returncode)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def run(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True,
        input_text: str | None = None) -> Result:
    """Run `argv` (no shell). Raise CommandFailed on a non-zero exit when `check`."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    started = time.monotonic()
    try:
        proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                              timeout=timeout, env=env,
                              stdin=None if input_text is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(argv, -1, f"timed out after {timeout:.0f} s: {exc.stderr or ''}") from None
    except FileNotFoundError:
        raise CommandFailed(argv, 127, f"{argv[0]}: command not found") from None
    took_ms = round(1000 * (time.monotonic() - started))
    log.debug("command", argv=argv[0], args=len(argv) - 1, rc=proc.returncode, took_ms=took_ms)
    if check and proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr)
    return Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
