"""Errors of the scheduler's runtime (the serving side of the Inference API).

Hierarchy::

    SchedulerError                    (scheduler.errors)
    └── ServingError                  root of the runtime's errors
        ├── InvalidFieldError         a field broke a rule (names the field and the rule)
        ├── RequestNotFoundError      no such request for this tenant   (also LookupError)
        ├── RoleDeniedError           a client key on Lease, a worker key on Submit
        ├── WrongStateError           valid, but not in this state
        │   ├── StaleLeaseError       a report names a lease that is no longer current
        │   └── ChunkGapError         a chunk index past the next one
        ├── RefusedError              admission said no (carries the Refusal)
        ├── TooMuchError              a size or count limit of the server or tenant
        └── ServingUnavailableError   shutting down, or the store failed

The gRPC servicer (``scheduler.service``) maps each class to a status code in
one table; nothing else translates.
"""

from __future__ import annotations

from scheduler.errors import SchedulerError
from scheduler.types import Refusal

__all__ = [
    "ChunkGapError",
    "InvalidFieldError",
    "RefusedError",
    "RequestNotFoundError",
    "RoleDeniedError",
    "ServingError",
    "ServingUnavailableError",
    "StaleLeaseError",
    "TooMuchError",
    "WrongStateError",
]


class ServingError(SchedulerError):
    """Root of the runtime's errors."""


class InvalidFieldError(ServingError, ValueError):
    """A request field broke a rule; the message names the field, the value and the rule."""


class RequestNotFoundError(ServingError, LookupError):
    """No queued, running or remembered request with this id for this tenant."""


class RoleDeniedError(ServingError):
    """The key's tenant may not make this call (clients submit, workers lease)."""


class WrongStateError(ServingError):
    """Valid, but not now (e.g. a Lease stream without hello)."""


class StaleLeaseError(WrongStateError):
    """A report about a request names a lease that is gone (expired, preempted,
    cancelled, or from before a restart): fenced off, so one request never has
    two live runs."""


class ChunkGapError(WrongStateError):
    """A chunk index past the next one expected: accepting it would leave a hole."""


class RefusedError(ServingError):
    """Admission refused the request; ``refusal`` holds the reason and the retry-after."""

    def __init__(self, refusal: Refusal) -> None:
        detail = f": {refusal.detail}" if refusal.detail else ""
        super().__init__(f"refused ({refusal.reason}){detail}")
        self.refusal = refusal


class TooMuchError(ServingError):
    """A limit of the server or the tenant (size, lite-topics); the message names it."""


class ServingUnavailableError(ServingError):
    """The server is shutting down or its store failed: retry later or elsewhere."""
