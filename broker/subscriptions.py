"""Event-driven pull: subscription sets, ready sets and credits of many consumers.

Pure: no I/O, no clock, no event loop. The server's hub feeds it events and
does the reads it asks for::

    engine.open(cid, grouped=False)
    engine.add(cid, key, cursor=5, end=9)       # subscribe, start at offset 5
    woken = engine.appended({key: 12})          # on every append (publish hook)
    engine.grant(cid, 100)                      # the consumer's credits
    for pull in engine.take(cid, max_messages=100):
        ... read pull.count messages of pull.key from pull.cursor ...
        engine.delivered(cid, pull, sent=n, next_cursor=c)

Why it scales with ready data, not with subscriptions: an append touches
only the consumers subscribed to the queues it appended to (one dict lookup
per queue), and ``take`` pops from the consumer's ready set, which holds only
queues that may have something to deliver. A consumer with 100,000
subscriptions and one ready queue costs one ready-set entry per poll.

Two kinds of subscription:

* plain (``cursor`` is an int): an ordered stream from a start offset. The
  engine knows each subscribed queue's end offset, so a queue is ready
  exactly when ``cursor < end``; reads advance the cursor.
* grouped (``cursor`` is None): the broker's consumer group holds the
  position and the one in-flight batch. The engine cannot see that state, so
  a queue is ready when something may have changed: an append, an ack or
  nack (:meth:`changed`) or a lease deadline passing (:meth:`due`). A lease
  that finds nothing (batch in flight, nothing new) leaves it idle until the
  next such event, so an idle grouped queue costs nothing either.

Credits are the backpressure: ``take`` never asks for more messages than the
consumer has credits, and a consumer with no credits is never woken, so a
slow or vanished consumer holds nothing but its subscription set.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Engine", "EngineStats", "Pull"]

_NO_SUBSCRIBERS: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Pull:
    """Read up to ``count`` messages of queue ``key`` (from ``cursor``; None: lease)."""

    key: bytes
    cursor: int | None
    count: int


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot for metrics: sizes of the ready sets and what plain subscriptions lag."""

    consumers: int
    subscriptions: int
    ready: int  # entries over all ready sets
    max_ready: int  # the largest ready set of one consumer
    lag: int  # messages appended but not yet read by plain subscriptions


class _Consumer:
    __slots__ = ("credits", "grouped", "ready", "subs")

    def __init__(self, grouped: bool) -> None:
        self.grouped = grouped
        self.subs: dict[bytes, int | None] = {}  # queue key -> cursor (None: grouped)
        self.ready: dict[bytes, None] = {}  # insertion-ordered set: round robin
        self.credits = 0


class Engine:
    """Subscription and ready sets of every consumer of one server."""

    def __init__(self, *, max_credits: int = 1_000_000) -> None:
        self._max_credits = max_credits
        self._consumers: dict[int, _Consumer] = {}
        self._subscribers: dict[bytes, tuple[int, ...]] = {}
        self._ends: dict[bytes, int] = {}  # known end offsets of subscribed queues
        self._deadlines: list[tuple[float, bytes]] = []  # lease deadlines (min-heap)

    # ---------------------------------------------------------- consumers

    def open(self, cid: int, *, grouped: bool) -> None:
        if cid in self._consumers:
            raise ValueError(f"consumer {cid} is open already")
        self._consumers[cid] = _Consumer(grouped)

    def close(self, cid: int) -> list[bytes]:
        """Forget a consumer; returns the queue keys it was subscribed to."""
        consumer = self._consumers.pop(cid, None)
        if consumer is None:
            return []
        keys = list(consumer.subs)
        for key in keys:
            self._unlink(cid, key)
        return keys

    def subscriptions(self, cid: int) -> int:
        return len(self._consumers[cid].subs)

    def subscribed(self, cid: int, key: bytes) -> bool:
        return key in self._consumers[cid].subs

    def credits(self, cid: int) -> int:
        return self._consumers[cid].credits

    def ready_count(self, cid: int) -> int:
        return len(self._consumers[cid].ready)

    def wants(self, cid: int) -> bool:
        """True when a poll of ``cid`` could deliver something now."""
        consumer = self._consumers[cid]
        return consumer.credits > 0 and bool(consumer.ready)

    # ------------------------------------------------------ subscriptions

    def add(self, cid: int, key: bytes, *, cursor: int | None, end: int) -> bool:
        """Subscribe (or move the start of) ``cid`` to ``key``; True if it is new.

        ``end`` is the queue's end offset as read when the subscription was
        made; appends reported since then may have moved it further.
        """
        consumer = self._consumers[cid]
        if (cursor is None) != consumer.grouped:
            raise ValueError("a grouped consumer subscribes without a cursor, a plain one with one")
        new = key not in consumer.subs
        consumer.subs[key] = cursor
        if new:
            self._subscribers[key] = (*self._subscribers.get(key, _NO_SUBSCRIBERS), cid)
        self._ends[key] = max(end, self._ends.get(key, 0))
        if cursor is None or cursor < self._ends[key]:
            consumer.ready[key] = None
        else:
            consumer.ready.pop(key, None)
        return new

    def remove(self, cid: int, key: bytes) -> bool:
        """Unsubscribe; False if ``cid`` was not subscribed to ``key``."""
        consumer = self._consumers[cid]
        if key not in consumer.subs:
            return False
        del consumer.subs[key]
        consumer.ready.pop(key, None)
        self._unlink(cid, key)
        return True

    def _unlink(self, cid: int, key: bytes) -> None:
        left = tuple(c for c in self._subscribers.get(key, _NO_SUBSCRIBERS) if c != cid)
        if left:
            self._subscribers[key] = left
        else:
            self._subscribers.pop(key, None)
            self._ends.pop(key, None)

    # ------------------------------------------------------------- events

    def appended(self, ends: Mapping[bytes, int]) -> list[int]:
        """Queues grew to ``ends`` (key -> end offset); returns consumers to wake."""
        woken: list[int] = []
        subscribers = self._subscribers
        for key, end in ends.items():
            cids = subscribers.get(key)
            if cids is None:
                continue
            self._ends[key] = max(self._ends[key], end)
            woken += [cid for cid in cids if self._mark(cid, key)]
        return woken

    def changed(self, key: bytes) -> list[int]:
        """A consumer group's state on ``key`` changed (ack, nack, lease expiry)."""
        return [
            cid
            for cid in self._subscribers.get(key, _NO_SUBSCRIBERS)
            if self._consumers[cid].grouped and self._mark(cid, key)
        ]

    def _mark(self, cid: int, key: bytes) -> bool:
        """Put ``key`` in ``cid``'s ready set if it may deliver; True if ``cid`` should wake."""
        consumer = self._consumers[cid]
        cursor = consumer.subs[key]
        if cursor is not None and cursor >= self._ends[key]:
            return False
        consumer.ready[key] = None
        return consumer.credits > 0

    def leased(self, key: bytes, deadline: float) -> None:
        """A batch of ``key`` is leased until ``deadline``: look again then."""
        heapq.heappush(self._deadlines, (deadline, key))

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None

    def due(self, now: float) -> list[int]:
        """Leases that ran out by ``now`` make their queues ready; returns consumers to wake."""
        woken: set[int] = set()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            woken.update(self.changed(key))
        return sorted(woken)

    # ------------------------------------------------------------ credits

    def grant(self, cid: int, credits: int) -> bool:
        """Add credits (capped); True if ``cid`` has something ready to use them on."""
        if credits < 0:
            raise ValueError(f"credits is {credits}; it must be >= 0")
        consumer = self._consumers[cid]
        consumer.credits = min(self._max_credits, consumer.credits + credits)
        return consumer.credits > 0 and bool(consumer.ready)

    def take(
        self,
        cid: int,
        *,
        max_messages: int,
        share: int | None = None,
        most: int | None = None,
        max_queues: int = 256,
    ) -> list[Pull]:
        """Pop ready queues, round robin, reserving credits for each pull.

        Reserves at most ``max_messages`` (and the consumer's credits) in all;
        :meth:`delivered` refunds what a pull did not use. ``share``: what one
        queue may take at least (None: the whole budget); a queue takes up to
        ``max(share, budget // ready queues)``, so a lone ready queue may use
        all the credits while many ready ones split them. ``most``: what one
        queue may take at most.
        """
        consumer = self._consumers[cid]
        budget = min(max_messages, consumer.credits)
        pulls: list[Pull] = []
        ready = consumer.ready
        if share is not None and ready:
            share = max(share, budget // len(ready))
        if most is not None:
            share = most if share is None else min(share, most)
        ends = self._ends
        while budget > 0 and ready and len(pulls) < max_queues:
            key = next(iter(ready))
            del ready[key]
            cursor = consumer.subs[key]
            limit = budget if share is None else min(budget, share)
            if cursor is None:
                count = limit
            else:
                count = min(limit, ends[key] - cursor)
                if count <= 0:
                    continue
            pulls.append(Pull(key, cursor, count))
            budget -= count
        consumer.credits -= sum(p.count for p in pulls)
        return pulls

    def delivered(self, cid: int, pull: Pull, *, sent: int, next_cursor: int | None) -> None:
        """A pull delivered ``sent`` messages; a plain one moved its cursor to ``next_cursor``.

        Unused credits go back. A plain queue with more to read goes to the
        back of the ready set; a grouped one that delivered anything too (the
        lease may hand out more once this batch settles, so it waits for
        :meth:`changed` if its next lease finds nothing).
        """
        if not 0 <= sent <= pull.count:
            raise ValueError(f"sent is {sent}; it must be in [0, {pull.count}]")
        consumer = self._consumers.get(cid)
        if consumer is None:
            return
        consumer.credits = min(self._max_credits, consumer.credits + pull.count - sent)
        if pull.key not in consumer.subs:
            return  # removed while the pull ran
        if pull.cursor is None:
            if sent:
                consumer.ready[pull.key] = None
            return
        cursor = consumer.subs[pull.key]
        if cursor != pull.cursor or next_cursor is None:
            return  # re-added with a new start while the pull ran: keep the new one
        consumer.subs[pull.key] = next_cursor
        if next_cursor < self._ends[pull.key]:
            consumer.ready[pull.key] = None

    def stats(self) -> EngineStats:
        """Sizes for metrics. Lag is summed over ready sets only: a plain queue
        is ready exactly when its cursor is behind its end, so this costs one
        step per ready entry, not one per subscription (a queue being read at the
        moment is out of its ready set, so its lag is not counted)."""
        subscriptions = ready = max_ready = lag = 0
        ends = self._ends
        for consumer in self._consumers.values():
            subscriptions += len(consumer.subs)
            size = len(consumer.ready)
            ready += size
            max_ready = max(max_ready, size)
            if not consumer.grouped:
                subs = consumer.subs
                for key in consumer.ready:
                    cursor = subs[key]
                    if cursor is not None:
                        lag += max(0, ends.get(key, cursor) - cursor)
        return EngineStats(len(self._consumers), subscriptions, ready, max_ready, lag)

    def subscribers_of(self, key: bytes) -> Iterable[int]:
        return self._subscribers.get(key, _NO_SUBSCRIBERS)
