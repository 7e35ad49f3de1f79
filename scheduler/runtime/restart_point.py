"""Where a restart must begin replaying the requests queue (pure bookkeeping).

The restart point is the lowest offset of a submit record whose request is
not finished; below it every request has its done record, so a restart can
skip it. Two subtleties make it more than a heap minimum:

* an offset closes only once the request's done record is stored, so the
  point never passes a request whose end could still be lost;
* a submit being written has no offset yet. It will land at or above the
  queue's end as known when its write began (every earlier write whose
  offset we know was stored before it), so each write in flight holds the
  point at that *floor* until its offset is known.
"""

from __future__ import annotations

import heapq
from collections import Counter

__all__ = ["RestartPoint"]


class RestartPoint:
    """Open offsets (a heap with lazy deletion), floors of writes in flight, the known end."""

    __slots__ = ("_closed", "_floors", "_open", "committed", "known_end")

    def __init__(self) -> None:
        self._open: list[int] = []
        self._closed: set[int] = set()
        self._floors: Counter[int] = Counter()
        self.known_end = 0  # 1 + the highest offset known to be stored
        self.committed = 0  # the point as last stored

    def open_floor(self) -> int:
        """A submit write begins; returns its floor for :meth:`close_floor`."""
        floor = self.known_end
        self._floors[floor] += 1
        return floor

    def close_floor(self, floor: int, offset: int | None) -> None:
        """The write ended: stored at ``offset`` (now open), or failed (None)."""
        self._floors[floor] -= 1
        if not self._floors[floor]:
            del self._floors[floor]
        if offset is not None:
            self.track(offset)

    def track(self, offset: int) -> None:
        """A submit record at ``offset`` is open (its request unfinished)."""
        heapq.heappush(self._open, offset)
        self.stored(offset)

    def stored(self, offset: int) -> None:
        """Some record was stored at ``offset`` (moves the known end)."""
        self.known_end = max(self.known_end, offset + 1)

    def close(self, offset: int) -> None:
        """The request whose submit record is at ``offset`` has its done record stored."""
        self._closed.add(offset)

    def point(self) -> int:
        heap = self._open
        while heap and heap[0] in self._closed:
            self._closed.discard(heapq.heappop(heap))
        low = heap[0] if heap else self.known_end
        if self._floors:
            low = min(low, *self._floors)
        return low
