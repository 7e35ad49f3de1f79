"""Deadlines of queued requests: a heap by deadline with lazy deletion.

An entry is pushed when it is queued (again, after a requeue); a popped item
whose entry is no longer queued (dispatched, finished, already dropped) is
simply skipped, so dispatch and cancel never search the heap.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from scheduler.policy.entry import QUEUED, Entry

__all__ = ["Deadlines"]


class Deadlines:
    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Entry]] = []

    def push(self, entry: Entry) -> None:
        deadline = entry.request.deadline_s
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, entry.seq, entry))

    def due(self, now: float) -> Iterator[Entry]:
        """Queued entries whose deadline is at or before ``now``, earliest first.

        The caller must take each one out of the queue before asking for the next.
        """
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry.state == QUEUED:
                yield entry
