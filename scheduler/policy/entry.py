"""The core's record of one live request, and the FIFO every discipline builds on.

``SeqQueue`` is FIFO by admission sequence with one twist: a request handed
back (preempted, lease lost, worker removed) re-enters *at its place*, ahead
of later arrivals. That needs no sorted structure. Every request handed back
was once popped from the front, so its sequence number is smaller than that
of every request still waiting in the FIFO; a small heap of handed-back
requests, drained before the FIFO, therefore yields exact sequence order.
"""

from __future__ import annotations

import heapq
from collections import deque

from scheduler.policy.tenants import TenantState
from scheduler.types import Request

__all__ = ["DONE", "QUEUED", "RUNNING", "Entry", "SeqQueue"]

QUEUED = 0
RUNNING = 1
DONE = 2  # completed, cancelled or dropped: final


class Entry:
    """Mutable bookkeeping of one request (internal; never leaves the core)."""

    __slots__ = (
        "band",
        "charged",
        "dispatch_no",
        "done_output_tokens",
        "first_token_s",
        "input_done",
        "preempting",
        "request",
        "seq",
        "state",
        "tenant",
        "worker_id",
        "worker_index",
    )

    def __init__(self, request: Request, seq: int, tenant: TenantState) -> None:
        self.request = request
        self.seq = seq
        self.tenant = tenant
        self.band = request.priority
        self.state = QUEUED
        self.done_output_tokens = 0
        self.charged = 0.0  # VTC cost booked for it so far (estimate, then corrected)
        self.worker_id: str | None = None
        self.dispatch_no = 0
        self.worker_index = 0  # it was its worker's n-th dispatch (window recovery)
        self.preempting = False  # a Preempt was issued and not yet answered
        self.first_token_s: float | None = None
        # Prompt tokens processed so far, over all runs (all of them once a
        # first token was seen; a preemption may report fewer). Their input
        # cost is earned, and a resume must not book it again.
        self.input_done = 0


class SeqQueue:
    """Entries in admission order; handed-back entries re-enter at their place.

    Removal is lazy: the core marks an entry DONE and calls :meth:`discard`,
    and :meth:`pop` skips dead entries, so cancel and expiry cost O(1).
    """

    __slots__ = ("_back", "_fresh", "live")

    def __init__(self) -> None:
        self._fresh: deque[Entry] = deque()
        self._back: list[tuple[int, Entry]] = []
        self.live = 0

    def push(self, entry: Entry) -> None:
        """A new arrival: its sequence number is the largest so far."""
        self._fresh.append(entry)
        self.live += 1

    def requeue(self, entry: Entry) -> None:
        heapq.heappush(self._back, (entry.seq, entry))
        self.live += 1

    def discard(self) -> None:
        """One queued entry was marked DONE in place."""
        self.live -= 1
        if self.live == 0:
            # Everything left is dead: drop it now rather than skip it later.
            self._fresh.clear()
            self._back.clear()

    def pop(self) -> Entry | None:
        back = self._back
        while back:
            entry = heapq.heappop(back)[1]
            if entry.state == QUEUED:
                self.live -= 1
                return entry
        fresh = self._fresh
        while fresh:
            entry = fresh.popleft()
            if entry.state == QUEUED:
                self.live -= 1
                return entry
        return None
