"""The policy contract the runtime and the simulator drive, and the smaller
contract each queueing discipline fills inside it.

Every method takes ``now`` (seconds, the caller's clock) and returns values;
nothing here awaits, sleeps or reads a clock.

Life of a request: ``submit`` -> queued -> ``dispatch`` -> running ->
``complete`` (or ``preempted`` / ``lease_expired`` / ``remove_worker``, which
put it back at its place in the queue, or ``cancel``). A queued request whose
deadline passes leaves through ``expire``.

Reports about a running request (``first_token``, ``complete``,
``preempted``, ``lease_expired``) raise ``UnknownRequestError`` when the id is
not running; calls naming an unknown worker raise ``UnknownWorkerError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from scheduler.policy.entry import Entry
from scheduler.types import (
    Admitted,
    Dispatch,
    Dropped,
    PolicyStats,
    Preempt,
    Refusal,
    Request,
    SchedulerConfig,
    WorkerFeedback,
)

__all__ = ["Policy", "QueueDiscipline"]


class Policy(Protocol):
    name: str

    def submit(self, request: Request, now: float) -> Admitted | Refusal:
        """Admit and queue the request, or refuse it with a reason and a retry-after."""

    def add_worker(self, worker_id: str, now: float) -> None:
        """A worker joins with the initial window."""

    def remove_worker(self, worker_id: str, now: float) -> list[Request]:
        """The worker leaves; its running requests go back to the queue at their
        place and are returned (in admission order) so the runtime can stop them."""

    def drain_worker(self, worker_id: str, now: float) -> None:
        """The worker is leaving: from now on it gets nothing new (its free window
        is 0 and no preemption picks its requests), while its running requests
        finish as usual. It lasts until ``remove_worker``."""

    def dispatch(
        self, now: float, worker_id: str | None = None, limit: int | None = None
    ) -> list[Dispatch]:
        """``worker_id`` None: fill every worker's free window, each decision going to
        the worker with the most free window (ties: least estimated load, then a
        seeded random choice), at most ``limit`` decisions if given.
        ``worker_id`` given: that pulling worker takes up to ``limit`` requests,
        bounded by its free window."""

    def preemptions(self, now: float) -> list[Preempt]:
        """Requests to stop so waiting higher-band requests can run; empty while
        any window is free. Each running request is named at most once."""

    def preempted(
        self,
        request_id: str,
        done_output_tokens: int,
        now: float,
        *,
        input_processed: int | None = None,
    ) -> None:
        """The runtime stopped it after ``done_output_tokens`` output tokens in all:
        requeue at its place; its next Dispatch carries that count.

        ``input_processed``: prompt tokens the engine processed, over all runs
        (a request stopped while it still waited for, or was in, its prefill
        processed fewer than all). The tenant is charged for those only, and a
        resume books the rest. None: not known, taken as the whole prompt.
        Counts are cumulative; a smaller report than an earlier one is ignored."""

    def lease_expired(self, request_id: str, now: float) -> None:
        """Its worker stopped answering: requeue at its place."""

    def first_token(self, request_id: str, now: float) -> None: ...

    def complete(self, request_id: str, input_tokens: int, output_tokens: int, now: float) -> None:
        """It finished. The counts are the real usage of the whole request
        (output includes tokens made before any preemption); the tenant's
        charge is corrected from the dispatch-time estimate to them."""

    def cancel(self, request_id: str, now: float) -> bool:
        """Forget a queued or running request; False when the id is unknown. A
        running one frees its window slot (stopping it is the runtime's job)
        and keeps the estimated charge."""

    def expire(self, now: float) -> list[Dropped]:
        """Queued requests at or past their deadline, removed."""

    def feedback(self, worker_id: str, feedback: WorkerFeedback, now: float) -> None:
        """Saturation signals from a worker: adjust its window (AIMD)."""

    def update_config(self, config: SchedulerConfig, now: float) -> None:
        """Hot reload of tenants, weights, quotas, windows; nothing queued is dropped.
        A tenant missing from the new config refuses new requests, while its
        queued ones still run."""

    def queued(self) -> int: ...

    def in_flight(self) -> int: ...

    def stats(self) -> PolicyStats: ...


class QueueDiscipline(Protocol):
    """The ordering part of a policy: which queued entry runs next.

    The core owns admission, workers, windows, deadlines and bookkeeping; a
    discipline only orders entries (STYLE point 4: rankers rank).
    """

    name: str
    preemptive: bool  # True when it orders by band, so higher bands may preempt

    def push(self, entry: Entry) -> None:
        """A newly admitted entry."""

    def requeue(self, entry: Entry) -> None:
        """An entry handed back; it goes back at its place."""

    def discard(self, entry: Entry) -> None:
        """A queued entry was marked DONE (cancelled, expired)."""

    def pop(self, cost: Callable[[Entry], float]) -> Entry | None:
        """Remove and return the next entry, charging its flow ``cost(entry)`` (the
        dispatch-time estimate; the callback also books it in the core)."""

    def charge(self, entry: Entry, amount: float) -> None:
        """Correct a dispatched entry's charge by ``amount`` (may be negative)."""

    def may_preempt(self, waiting_band: int, victim_band: int) -> bool:
        """Whether a request waiting in ``waiting_band`` may stop one in ``victim_band``."""

    def set_band_shares(self, shares: tuple[float, ...] | None) -> None: ...

    def virtual_counters(self, tenant: str) -> dict[int, float]:
        """band -> the tenant's virtual counter there (empty for disciplines without)."""
