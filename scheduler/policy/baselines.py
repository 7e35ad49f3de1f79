"""The baselines the simulator compares ``tidegate`` against.

Each is only a queue discipline; admission, windows, deadlines and
bookkeeping are the same core, so a comparison measures ordering alone.

- ``fifo``: one queue in admission order, priority ignored.
- ``round-robin``: one request per tenant in turn, FIFO inside a tenant,
  weights and priority ignored.
- ``strict-priority``: higher band first, FIFO inside a band, no tenant
  fairness; preemptive like ``tidegate``.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable

from scheduler.policy.entry import Entry, SeqQueue

__all__ = ["Fifo", "RoundRobin", "StrictPriority"]


class _NoCounters:
    """The parts of the discipline contract that only fair sharing uses."""

    __slots__ = ()

    def charge(self, entry: Entry, amount: float) -> None:
        """Nothing to correct: the order does not depend on service received."""

    def set_band_shares(self, shares: tuple[float, ...] | None) -> None:
        """Band shares are a ``tidegate`` feature; the baselines ignore them."""

    def virtual_counters(self, tenant: str) -> dict[int, float]:
        return {}


class Fifo(_NoCounters):
    name = "fifo"
    preemptive = False

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue = SeqQueue()

    def push(self, entry: Entry) -> None:
        self._queue.push(entry)

    def requeue(self, entry: Entry) -> None:
        self._queue.requeue(entry)

    def discard(self, entry: Entry) -> None:
        self._queue.discard()

    def pop(self, cost: Callable[[Entry], float]) -> Entry | None:
        entry = self._queue.pop()
        if entry is not None:
            cost(entry)
        return entry

    def may_preempt(self, waiting_band: int, victim_band: int) -> bool:
        return False


class RoundRobin(_NoCounters):
    name = "round-robin"
    preemptive = False

    __slots__ = ("_queues", "_ring", "_ringed")

    def __init__(self) -> None:
        self._queues: dict[str, SeqQueue] = {}
        self._ring: deque[str] = deque()  # tenants whose turn is coming
        self._ringed: set[str] = set()

    def _enter(self, entry: Entry) -> SeqQueue:
        tenant = entry.tenant.name
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = SeqQueue()
        if tenant not in self._ringed:
            self._ringed.add(tenant)
            self._ring.append(tenant)
        return queue

    def push(self, entry: Entry) -> None:
        self._enter(entry).push(entry)

    def requeue(self, entry: Entry) -> None:
        self._enter(entry).requeue(entry)

    def discard(self, entry: Entry) -> None:
        # The tenant stays in the ring until its turn finds nothing left.
        self._queues[entry.tenant.name].discard()

    def pop(self, cost: Callable[[Entry], float]) -> Entry | None:
        ring = self._ring
        while ring:
            tenant = ring.popleft()
            queue = self._queues[tenant]
            entry = queue.pop()
            if entry is None:
                self._ringed.discard(tenant)
                continue
            if queue.live > 0:
                ring.append(tenant)
            else:
                self._ringed.discard(tenant)
            cost(entry)
            return entry
        return None

    def may_preempt(self, waiting_band: int, victim_band: int) -> bool:
        return False


class StrictPriority(_NoCounters):
    name = "strict-priority"
    preemptive = True

    __slots__ = ("_ascending", "_bands", "_order")

    def __init__(self) -> None:
        self._bands: dict[int, SeqQueue] = {}
        self._ascending: list[int] = []
        self._order: list[int] = []  # highest first

    def _band(self, priority: int) -> SeqQueue:
        queue = self._bands.get(priority)
        if queue is None:
            queue = self._bands[priority] = SeqQueue()
            bisect.insort(self._ascending, priority)
            self._order = self._ascending[::-1]
        return queue

    def push(self, entry: Entry) -> None:
        self._band(entry.band).push(entry)

    def requeue(self, entry: Entry) -> None:
        self._band(entry.band).requeue(entry)

    def discard(self, entry: Entry) -> None:
        self._bands[entry.band].discard()

    def pop(self, cost: Callable[[Entry], float]) -> Entry | None:
        for priority in self._order:
            queue = self._bands[priority]
            if queue.live:
                entry = queue.pop()
                if entry is not None:
                    cost(entry)
                return entry
        return None

    def may_preempt(self, waiting_band: int, victim_band: int) -> bool:
        return waiting_band > victim_band
