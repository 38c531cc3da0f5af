"""Ask many targets the same question at once, each within a bounded deadline, and
fail closed: an answer missing from any target that had to answer is UNAVAILABLE
naming that target, never a silent gap.

Each question goes through `Target.reads` (a client with a short deadline), and the
wait itself is bounded too, so an in-process backend that hangs cannot hold a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from typing import TypeVar

import structlog

from csi_driver.targets import Target
from sluice_common.errors import SluiceError, Unavailable

log = structlog.get_logger(__name__)
T = TypeVar("T")
WORKERS = 32


class Asker:
    def __init__(self, timeout: float, workers: int = WORKERS) -> None:
        """`timeout`: one read's deadline; a question may make two reads (a name and
        the room), so the wait for an answer is bounded at twice that, plus a second."""
        self.timeout = timeout
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ask")

    def ask(self, targets: Sequence[Target], question: Callable[[Target], T]) -> dict[str, T | SluiceError]:
        """Each target's answer, or the error it gave, or Unavailable when it did not
        answer within the deadline."""
        pending = {self._pool.submit(question, t): t for t in targets}
        done, _ = futures.wait(pending, timeout=2 * self.timeout + 1.0)
        answers: dict[str, T | SluiceError] = {}
        for future, target in pending.items():
            answers[target.id] = _outcome(future, target, done, self.timeout)
        return answers

    def all(self, targets: Sequence[Target], question: Callable[[Target], T], what: str) -> dict[str, T]:
        """Every target's answer; Unavailable naming the silent ones when any is missing."""
        answers = self.ask(targets, question)
        require(answers, [t.id for t in targets], what)
        return answers  # type: ignore[return-value]


def require(answers: dict[str, object], target_ids: Sequence[str], what: str) -> None:
    """Raise the first error among `target_ids`' answers (Unavailable for an unreachable
    target, naming it and `what` could not be checked); a typed error other than
    Unavailable (e.g. NotFound) passes through as it is."""
    failed = [(tid, answers[tid]) for tid in target_ids if isinstance(answers.get(tid), SluiceError)]
    if not failed:
        return
    unavailable = [tid for tid, err in failed if isinstance(err, Unavailable)]
    if unavailable:
        reasons = "; ".join(f"{tid}: {answers[tid]}" for tid in unavailable)
        raise Unavailable(f"target {unavailable[0]} did not answer, so {what} cannot be checked "
                          f"and nothing was changed ({reasons})", targets=",".join(unavailable))
    raise failed[0][1]  # type: ignore[misc]


def _outcome(future: futures.Future, target: Target, done: set, timeout: float) -> object:
    if future not in done:
        future.cancel()
        log.warning("target silent", target=target.id, timeout_s=timeout)
        return Unavailable(f"no answer within {2 * timeout + 1:g}s")
    try:
        return future.result()
    except SluiceError as exc:
        if isinstance(exc, Unavailable):
            log.warning("target unavailable", target=target.id, error=str(exc))
        return exc
    except Exception as exc:  # a bug or a transport surprise: the target did not answer
        log.exception("target lookup failed", target=target.id)
        return Unavailable(f"{type(exc).__name__}: {exc}")
