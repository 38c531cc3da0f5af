"""Sluice's typed errors. Lower layers raise these; one table (grpc_status.py) maps them
to gRPC codes at the service edge. No layer below a servicer imports gRPC.

Every error carries a human message that names the field or object at fault, and
optional structured `details` (for example the numeric code a backend returned).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping


class SluiceError(Exception):
    """Base class. Never raised directly: pick the subclass that says what went wrong."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: Mapping[str, Any] = details

    def __str__(self) -> str:
        if not self.details:
            return self.message
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.details.items()))
        return f"{self.message} ({extra})"


class InvalidArgument(SluiceError):
    """The request itself is wrong: a missing or malformed field."""


class NotFound(SluiceError):
    """The named object does not exist."""


class AlreadyExists(SluiceError):
    """An object with that name exists and is incompatible with the request."""


class OutOfRange(SluiceError):
    """A size or count the backend cannot satisfy within the caller's limits."""


class NoSpace(SluiceError):
    """Not enough capacity (or overcommit headroom) for the request."""


class InUse(SluiceError):
    """The object is in use (exported, has dependents) and cannot be changed that way."""


class Busy(SluiceError):
    """Another operation on the same object is in flight; retry later."""


class StaleToken(SluiceError):
    """A pagination token that this plugin did not hand out (or no longer can honour)."""


class FailedPrecondition(SluiceError):
    """The system is not in a state that allows the operation."""


class PermissionDenied(SluiceError):
    """The caller's identity (its certificate's role or host NQN) does not allow the call."""


class Unavailable(SluiceError):
    """A backend or peer does not answer (down, not configured, not reachable)."""


class BackendFailure(SluiceError):
    """A tool or the kernel failed in a way no more specific error describes."""
