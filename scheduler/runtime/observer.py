"""Hooks the runtime calls as a request moves, for metrics and traces.

The policy reports state (``stats()``); what only the moments of a request
can tell — how long it waited, when its first token came, which worker went
quiet — the runtime reports here, as it happens, on the event loop. An
observer must be quick and must not raise: it runs inside the runtime's
moves. Times are the runtime's clock (monotonic in the server).

``worker`` is the policy's key of the worker stream (see
``Core.new_session_key``); ``cause`` of a requeue is one of
:class:`RequeueCause`. The default, :data:`NO_OBSERVER`, does nothing, so a
runtime without metrics or tracing pays one empty call per move.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from scheduler.types import Refusal, Request, WorkerFeedback

__all__ = ["NO_OBSERVER", "NoObserver", "Observers", "RequestObserver", "RequeueCause"]


class RequeueCause:
    """Why a running request went back to the queue (a closed set of label values)."""

    PREEMPTED = "preempted"
    LEASE_EXPIRED = "lease_expired"  # its worker went quiet or ignored a stop
    RETRIED = "retried"  # a retryable failure
    DRAINED = "drained"  # granted to a worker that said it was leaving, never sent

    ALL: tuple[str, ...] = (PREEMPTED, LEASE_EXPIRED, RETRIED, DRAINED)


class RequestObserver(Protocol):
    def admitted(self, request: Request, properties: Mapping[str, str], decided: float) -> None:
        """Admitted at ``request.arrival_s``, decision made at ``decided``; now queued."""

    def refused(self, request: Request, refusal: Refusal, properties: Mapping[str, str]) -> None:
        """Refused by admission (nothing was written)."""

    def stored(self, request_id: str, now: float) -> None:
        """Its submit record is durable: Submit answers."""

    def granted(self, request: Request, worker: str, attempt: int, now: float) -> None:
        """Leaves the queue for ``worker`` (attempt 1, 2, ... counts grants)."""

    def carry(self, request_id: str, properties: Mapping[str, str]) -> Mapping[str, str]:
        """The properties its grant carries to the worker (a tracer adds its context)."""

    def first_token(self, request_id: str, worker: str, now: float) -> None:
        """The worker reports the first token of the current run."""

    def tokens(self, worker: str, count: int) -> None:
        """``worker`` streamed ``count`` output tokens (accepted chunks)."""

    def feedback(self, worker: str, feedback: WorkerFeedback, now: float) -> None:
        """``worker``'s latest saturation signals."""

    def requeued(self, request_id: str, worker: str, cause: str, now: float) -> None:
        """Its run on ``worker`` ended without finishing it; it waits again."""

    def completing(self, request_id: str, now: float) -> None:
        """The worker reported its completion; the end is being stored."""

    def finished(self, request_id: str, outcome: str, now: float) -> None:
        """It ended for good (``outcome``: a final ``State``)."""


class NoObserver:
    """Observes nothing."""

    def admitted(self, request: Request, properties: Mapping[str, str], decided: float) -> None:
        pass

    def refused(self, request: Request, refusal: Refusal, properties: Mapping[str, str]) -> None:
        pass

    def stored(self, request_id: str, now: float) -> None:
        pass

    def granted(self, request: Request, worker: str, attempt: int, now: float) -> None:
        pass

    def carry(self, request_id: str, properties: Mapping[str, str]) -> Mapping[str, str]:
        return properties

    def first_token(self, request_id: str, worker: str, now: float) -> None:
        pass

    def tokens(self, worker: str, count: int) -> None:
        pass

    def feedback(self, worker: str, feedback: WorkerFeedback, now: float) -> None:
        pass

    def requeued(self, request_id: str, worker: str, cause: str, now: float) -> None:
        pass

    def completing(self, request_id: str, now: float) -> None:
        pass

    def finished(self, request_id: str, outcome: str, now: float) -> None:
        pass


NO_OBSERVER = NoObserver()


class Observers:
    """Several observers as one, called in order (metrics, then tracing)."""

    def __init__(self, *observers: RequestObserver) -> None:
        self._all = observers

    def admitted(self, request: Request, properties: Mapping[str, str], decided: float) -> None:
        for o in self._all:
            o.admitted(request, properties, decided)

    def refused(self, request: Request, refusal: Refusal, properties: Mapping[str, str]) -> None:
        for o in self._all:
            o.refused(request, refusal, properties)

    def stored(self, request_id: str, now: float) -> None:
        for o in self._all:
            o.stored(request_id, now)

    def granted(self, request: Request, worker: str, attempt: int, now: float) -> None:
        for o in self._all:
            o.granted(request, worker, attempt, now)

    def carry(self, request_id: str, properties: Mapping[str, str]) -> Mapping[str, str]:
        for o in self._all:
            properties = o.carry(request_id, properties)
        return properties

    def first_token(self, request_id: str, worker: str, now: float) -> None:
        for o in self._all:
            o.first_token(request_id, worker, now)

    def tokens(self, worker: str, count: int) -> None:
        for o in self._all:
            o.tokens(worker, count)

    def feedback(self, worker: str, feedback: WorkerFeedback, now: float) -> None:
        for o in self._all:
            o.feedback(worker, feedback, now)

    def requeued(self, request_id: str, worker: str, cause: str, now: float) -> None:
        for o in self._all:
            o.requeued(request_id, worker, cause, now)

    def completing(self, request_id: str, now: float) -> None:
        for o in self._all:
            o.completing(request_id, now)

    def finished(self, request_id: str, outcome: str, now: float) -> None:
        for o in self._all:
            o.finished(request_id, outcome, now)
