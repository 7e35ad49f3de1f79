"""Weighted fair sharing inside one priority band by virtual token counters (VTC).

Each tenant with requests in the band is a *flow* with a counter of the
service it received, in cost units divided by its weight. The next request
comes from the backlogged flow with the smallest counter; its estimated cost
is charged at dispatch and corrected to the real usage at completion.

Why the share bound holds: the chosen flow has the minimum counter, and a
charge raises it by at most U = max(cost / weight). So while two flows stay
backlogged, neither counter can run ahead of the other by more than U, and
their weight-normalised service over any interval differs by at most 2U.

A flow that comes back from idle is lifted to the smallest counter among
active flows (or to the band's virtual time when none is active): otherwise
the credit it "saved" while idle would let it monopolise the band.

Cost: a heap of flows keyed by counter, so a decision is O(log flows). Keys
change only on charge; the old heap item is left behind and recognised as
stale by its token (lazy deletion), and the heap is rebuilt when stale
items outnumber live ones.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from scheduler.policy.entry import Entry, SeqQueue

__all__ = ["FairBand", "Flow"]

_NOT_IN_HEAP = -1


class Flow:
    """One tenant's requests in one band."""

    __slots__ = ("counter", "queue", "tenant", "token")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.queue = SeqQueue()
        self.counter = 0.0
        self.token = _NOT_IN_HEAP  # the heap item that currently stands for it


class FairBand:
    """The VTC scheduler of one band."""

    __slots__ = ("_heap", "_next_token", "flows", "queued", "virtual_time")

    def __init__(self) -> None:
        self.flows: dict[str, Flow] = {}
        self._heap: list[tuple[float, int, Flow]] = []
        self._next_token = 0
        self.queued = 0
        # The counter of the last flow served: where a flow returning to an
        # empty band starts, so old credit cannot be hoarded across an idle band.
        self.virtual_time = 0.0

    def _flow(self, tenant: str) -> Flow:
        flow = self.flows.get(tenant)
        if flow is None:
            flow = self.flows[tenant] = Flow(tenant)
        return flow

    def _key(self, flow: Flow) -> None:
        """(Re)insert ``flow`` under its current counter; any older item goes stale."""
        token = self._next_token
        self._next_token = token + 1
        flow.token = token
        heapq.heappush(self._heap, (flow.counter, token, flow))
        if len(self._heap) > 2 * len(self.flows) + 64:
            self._heap = [item for item in self._heap if item[2].token == item[1]]
            heapq.heapify(self._heap)

    def _top(self) -> Flow | None:
        heap = self._heap
        while heap:
            _, token, flow = heap[0]
            if flow.token == token:
                return flow
            heapq.heappop(heap)
        return None

    def _activate(self, flow: Flow) -> None:
        top = self._top()
        floor = top.counter if top is not None else self.virtual_time
        flow.counter = max(flow.counter, floor)
        self._key(flow)

    def push(self, entry: Entry) -> None:
        flow = self._flow(entry.tenant.name)
        flow.queue.push(entry)
        self.queued += 1
        if flow.token == _NOT_IN_HEAP:
            self._activate(flow)

    def requeue(self, entry: Entry) -> None:
        flow = self._flow(entry.tenant.name)
        flow.queue.requeue(entry)
        self.queued += 1
        if flow.token == _NOT_IN_HEAP:
            self._activate(flow)

    def discard(self, entry: Entry) -> None:
        flow = self.flows[entry.tenant.name]
        flow.queue.discard()
        self.queued -= 1
        if flow.queue.live == 0:
            flow.token = _NOT_IN_HEAP

    def pop(self, cost: Callable[[Entry], float]) -> Entry | None:
        flow = self._top()
        if flow is None:
            return None
        heapq.heappop(self._heap)
        entry = flow.queue.pop()
        assert entry is not None, "a flow in the heap has a live entry"
        self.queued -= 1
        self.virtual_time = max(self.virtual_time, flow.counter)
        flow.counter += cost(entry) / entry.tenant.weight
        if flow.queue.live > 0:
            self._key(flow)
        else:
            flow.token = _NOT_IN_HEAP
        return entry

    def charge(self, entry: Entry, amount: float) -> None:
        flow = self.flows[entry.tenant.name]
        flow.counter += amount / entry.tenant.weight
        if flow.token != _NOT_IN_HEAP:
            self._key(flow)

    def min_counter(self) -> float | None:
        top = self._top()
        return None if top is None else top.counter
