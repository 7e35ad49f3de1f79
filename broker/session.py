"""One consumer's Subscribe stream, in values (the servicer does the protobuf).

The client's requests arrive as :class:`Change` values and are applied in
order by :meth:`Session.apply`; the stream's writer loop waits on
:attr:`Session.wake`, sends what :meth:`Session.outbox` holds (change
confirmations and notices, in order) and then :meth:`Session.pull`\\ s the
ready queues within the credits. A frame's acks (one broker pass for all
its queues) and reads and leases of recent data go through
:meth:`Hub.run_write`: on the loop under ``fsync: interval`` (they write
only unsynced index entries and read the tails or the page cache), in the
hub's thread pool otherwise. A read that would reach older log records is
stopped before it reads and goes to the pool (:meth:`Broker.warm_reads`).

Starting a subscription (all in one pool call per request): the broker
counts a subscriber on the queue (creating it; a subscribed lite-topic never
expires), the start is resolved to an offset, and, for a group without a
committed position, the group is placed there. The queue's end is read once
more after the engine holds the subscription, so an append that raced the
subscription cannot be missed.

A request's adds are all or nothing. When a tenant limit (LimitExceeded) or
the state of a queue (NotFound, FailedPrecondition) refuses them, none is
made, nothing stays counted against the tenant's limits, and the refusal
goes into the request's :class:`Changed` (in order with the stream's other
confirmations) instead of ending the stream: the subscriptions held before
keep delivering. Anything else (a closed store, a bug) still ends it.
"""

from __future__ import annotations

import contextlib
import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    StoreClosed,
)
from broker.hub import Hub
from broker.reading import ColdRead
from broker.store import Broker
from broker.subscriptions import Pull
from broker.types import Message, QueueName

__all__ = ["Batch", "Change", "Changed", "Notice", "Session", "Start", "StartKind"]

_Named = tuple[Pull, QueueName]
_Read = tuple[Pull, QueueName, list[Message], float | None]  # what one pull found


class StartKind(enum.IntEnum):  # the numbers of StartPosition.Kind in the .proto
    DEFAULT = 0
    EARLIEST = 1
    LATEST = 2
    OFFSET = 3
    TIMESTAMP = 4


@dataclass(frozen=True, slots=True)
class Start:
    kind: StartKind = StartKind.DEFAULT
    offset: int = 0
    timestamp: float = 0.0


@dataclass(frozen=True, slots=True)
class Change:
    """One validated client request."""

    add: tuple[tuple[QueueName, Start], ...] = ()
    remove: tuple[QueueName, ...] = ()
    credits: int = 0
    ack: tuple[tuple[QueueName, tuple[int, ...]], ...] = ()
    nack: tuple[tuple[QueueName, tuple[int, ...]], ...] = ()
    extend: tuple[tuple[QueueName, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Changed:
    """The answer to one request with adds or removals.

    ``refused``: why the request's adds (``refused_adds``, in request order)
    were all refused; ``started`` is then empty and the removals still count.
    """

    started: tuple[tuple[QueueName, int], ...]
    removed: int
    total: int
    refused: BrokerError | None = None
    refused_adds: tuple[QueueName, ...] = ()


@dataclass(frozen=True, slots=True)
class Notice:
    """A per-item failure that does not end the stream."""

    error: BrokerError
    queue: QueueName | None


@dataclass(frozen=True, slots=True)
class Batch:
    messages: list[Message]
    deadlines: dict[QueueName, float]  # groups: lease deadline per queue
    credits_left: int


Outbound = Changed | Notice


def first_at_or_after(broker: Broker, queue: QueueName, timestamp: float) -> int:
    """First offset stored at or after ``timestamp`` (binary search: log2(n) reads)."""
    info = broker.queue_info(queue)
    lo, hi = info.min_offset, info.next_offset
    while lo < hi:
        mid = (lo + hi) // 2
        found = broker.read(queue, mid, 1)
        if not found:
            hi = mid
            continue
        if found[0].timestamp < timestamp:
            lo = found[0].offset + 1
        else:
            hi = mid
    return lo


ROUND_MESSAGES = 1000  # what one pull round may take (with the credits for it)


class Session:
    """State of one Subscribe stream; every method runs on the event loop."""

    def __init__(
        self,
        hub: Hub,
        tenant: str,
        *,
        group: str,
        lease_s: float,
        max_batch: int,
        max_lease: int | None = None,
    ) -> None:
        self.hub = hub
        self.tenant = tenant
        self.group = group
        self.lease_s = lease_s
        self.max_batch = max_batch
        # A group leases at most max_lease of one queue (default: a frame);
        # a plain stream has no lease and reads what the credits allow.
        self.max_lease = max_lease or max_batch
        self.max_round = min(hub.broker.settings.max_read_messages, max(max_batch, ROUND_MESSAGES))
        self.cid, self.wake = hub.open_consumer(grouped=bool(group))
        self._names: dict[bytes, QueueName] = {}
        self._outbox: deque[Outbound] = deque()
        self._started: dict[bytes, int] = {}
        self._closed = False

    @property
    def engine_ready(self) -> bool:
        return self.hub.engine.wants(self.cid)

    def outbox(self) -> list[Outbound]:
        items = list(self._outbox)
        self._outbox.clear()
        return items

    def _post(self, item: Outbound) -> None:
        self._outbox.append(item)
        self.wake.set()

    # -------------------------------------------------------------- changes

    async def apply(self, change: Change) -> None:
        """Apply one request: removals, additions, credits, settlements (in that order)."""
        hub, engine, cid = self.hub, self.hub.engine, self.cid
        removed = 0
        if change.remove:
            gone = [q for q in change.remove if engine.remove(cid, q.key)]
            removed = len(gone)
            for q in gone:
                self._names.pop(q.key, None)
            if gone:
                self.hub.quotas.release_subscriptions(self.tenant, len(gone))
                await hub.run(_unsubscribe, hub.broker, gone)
        refused: BrokerError | None = None
        if change.add:
            try:
                await self._add(change.add)
            except (LimitExceeded, NotFound, FailedPrecondition) as exc:
                if isinstance(exc, StoreClosed):
                    raise  # the server is stopping: the stream ends
                refused = _refusal(exc, len(change.add))
        if refused is not None:
            self._post(
                Changed(
                    (),
                    removed,
                    engine.subscriptions(cid),
                    refused,
                    tuple(q for q, _ in change.add),
                )
            )
        elif change.add or change.remove:
            self._post(
                Changed(
                    tuple((q, self._started.pop(q.key, 0)) for q, _ in change.add),
                    removed,
                    engine.subscriptions(cid),
                )
            )
        if change.credits and engine.grant(cid, change.credits):
            self.wake.set()
        for verb, items in (("ack", change.ack), ("nack", change.nack)):
            if items:
                await self._settle(verb, items)
        for queue, lease_s in change.extend:
            try:
                deadline = await hub.run(hub.broker.extend, self.group, queue, lease_s)
                engine.leased(queue.key, deadline)
            except (FailedPrecondition, NotFound, InvalidArgument) as exc:
                self._post(Notice(exc, queue))

    async def _add(self, adds: Sequence[tuple[QueueName, Start]]) -> None:
        hub, engine, cid = self.hub, self.hub.engine, self.cid
        unique: dict[bytes, tuple[QueueName, Start]] = {q.key: (q, s) for q, s in adds}
        new_keys = {key for key in unique if not engine.subscribed(cid, key)}
        fresh = len(new_keys)
        hub.quotas.reserve_subscriptions(self.tenant, fresh)
        try:
            placed = await hub.run(self._subscribe_all, list(unique.values()))
        except BaseException:
            hub.quotas.release_subscriptions(self.tenant, fresh)
            raise
        self._started = {}
        grouped = bool(self.group)
        taken = 0  # placed subscriptions the engine holds (its close releases them)
        try:
            for queue, start, end in placed:
                known = not engine.add(cid, queue.key, cursor=None if grouped else start, end=end)
                taken += 1
                self._names[queue.key] = queue
                self._started[queue.key] = start
                if known:
                    await hub.run(hub.broker.unsubscribe, queue)  # held already: one count only
            # Appends between the reads above and engine.add() were not matched to
            # this consumer: read the ends again now that the engine holds them.
            ends = await hub.run(_ends, hub.broker, [q for q, _, _ in placed])
        except (NotFound, FailedPrecondition) as exc:
            # Part of the request is in place, so it cannot be answered as refused:
            # give back what the engine does not hold and end the stream (its
            # close releases the rest; the client subscribes again).
            rest = [q for q, _, _ in placed[taken:]]
            hub.quotas.release_subscriptions(self.tenant, sum(1 for q in rest if q.key in new_keys))
            with contextlib.suppress(BrokerError):
                await hub.run(_unsubscribe, hub.broker, rest)
            raise RuntimeError(f"subscriptions placed only in part: {exc}") from exc
        hub.wake(engine.appended(ends))
        if grouped:
            self.wake.set()

    def _subscribe_all(
        self, adds: list[tuple[QueueName, Start]]
    ) -> list[tuple[QueueName, int, int]]:
        """Thread: count subscribers, check the tenant's limit, resolve the starts."""
        hub, broker = self.hub, self.hub.broker
        new: list[QueueName] = []
        if hub.quotas.counts_lite_topics(self.tenant):
            new = [q for q, _ in adds if q.is_lite and not broker.exists(q)]
        hub.quotas.reserve_lite_topics(self.tenant, len(new))
        placed: list[tuple[QueueName, int, int]] = []
        try:
            for queue, start in adds:
                info = broker.subscribe(queue)
                try:
                    offset = self._resolve(broker, queue, start, info.min_offset, info.next_offset)
                except BaseException:
                    broker.unsubscribe(queue)
                    raise
                placed.append((queue, offset, info.next_offset))
        except BaseException:
            for queue, _, _ in placed:
                broker.unsubscribe(queue)
            # Those created stay live (until their TTL) and counted; give back the rest.
            hub.quotas.release_lite_topics(self.tenant, sum(1 for q in new if not broker.exists(q)))
            raise
        return placed

    def _resolve(self, broker: Broker, queue: QueueName, start: Start, low: int, end: int) -> int:
        if self.group:
            committed = broker.committed_offset(self.group, queue)
            if committed is not None:
                return committed
        kind = start.kind
        if kind is StartKind.DEFAULT:
            kind = StartKind.EARLIEST if self.group else StartKind.LATEST
        if kind is StartKind.EARLIEST:
            offset = low
        elif kind is StartKind.LATEST:
            offset = end
        elif kind is StartKind.OFFSET:
            offset = max(start.offset, low)
        else:
            offset = first_at_or_after(broker, queue, start.timestamp)
        if self.group and offset != low:
            broker.commit_offset(self.group, queue, min(offset, end))
        return offset

    async def _settle(self, verb: str, items: Sequence[tuple[QueueName, tuple[int, ...]]]) -> None:
        if not self.group:
            return  # a plain stream keeps no state: nothing to settle
        hub = self.hub
        # Not synced one by one under fsync: always: the client gets no answer
        # to an ack, so nothing waits on its fsync; one sync shortly after
        # covers every ack made before it (a crash of the machine in between
        # may bring those messages again, at least once).
        outcomes = await hub.run_settle(self._settle_all, verb, items)
        if hub.broker.sync_control:
            hub.sync_soon()
        for (queue, _), outcome in zip(items, outcomes, strict=True):
            if isinstance(outcome, BrokerError):
                self._post(Notice(outcome, queue))
            elif outcome:  # the next lease may find something: look again
                hub.wake(hub.engine.changed(queue.key))

    def _settle_all(
        self, verb: str, items: Sequence[tuple[QueueName, tuple[int, ...]]]
    ) -> list[BrokerError | bool]:
        """One broker pass for a frame's acks or nacks: for each item its refusal,
        or whether the queue's next lease may find something."""
        method = self.hub.broker.ack if verb == "ack" else self.hub.broker.nack
        outcomes: list[BrokerError | bool] = []
        for queue, offsets in items:
            try:
                outcomes.append(method(self.group, queue, offsets, sync=False))
            except (FailedPrecondition, NotFound) as exc:
                outcomes.append(exc)
        return outcomes

    # ---------------------------------------------------------------- pulls

    async def pull(self) -> Batch:
        """One round of reads over the ready queues, within the credits."""
        engine = self.hub.engine
        # A round may take more than a frame (frames split it): a consumer that
        # gave credits for several frames of one busy queue gets them (under
        # one lease, up to max_lease) back to back, instead of one frame per
        # ack round trip.
        pulls = engine.take(
            self.cid,
            max_messages=self.max_round,
            share=self.max_batch,
            most=self.max_lease if self.group else None,
        )
        named = [(p, self._names[p.key]) for p in pulls if p.key in self._names]
        # Recent data (the tails, the page cache) is read on the loop; a read
        # that would reach older log records stops before it reads, and it and
        # the pulls after it go to the pool (broker.Broker.warm_reads).
        results, rest = await self.hub.run_write(0, 0, self._read_warm, named)
        if rest:
            results += await self.hub.run(self._read, rest)
        messages: list[Message] = []
        deadlines: dict[QueueName, float] = {}
        now = self.hub.clock()
        for pull, name, found, deadline in results:
            next_cursor = None
            if pull.cursor is not None:
                next_cursor = found[-1].offset + 1 if found else pull.cursor + pull.count
            engine.delivered(self.cid, pull, sent=len(found), next_cursor=next_cursor)
            if deadline is not None and deadline > now:
                engine.leased(pull.key, deadline)
                if found:
                    deadlines[name] = deadline
            messages += found
        for pull in pulls:
            if pull.key not in self._names:
                engine.delivered(self.cid, pull, sent=0, next_cursor=None)
        return Batch(messages, deadlines, engine.credits(self.cid))

    def _read_warm(self, named: list[tuple[Pull, QueueName]]) -> tuple[list[_Read], list[_Named]]:
        """:meth:`_read` while the reads stay warm; the pulls from the first cold
        one on come back unread."""
        out: list[_Read] = []
        with self.hub.broker.warm_reads():
            for at, (pull, name) in enumerate(named):
                try:
                    out.append(self._read_one(pull, name))
                except ColdRead:
                    return out, named[at:]
        return out, []

    def _read(self, named: list[_Named]) -> list[_Read]:
        return [self._read_one(pull, name) for pull, name in named]

    def _read_one(self, pull: Pull, name: QueueName) -> _Read:
        broker = self.hub.broker
        try:
            if pull.cursor is None:
                lease = broker.lease(self.group, name, pull.count, self.lease_s)
                return pull, name, list(lease.messages), lease.deadline
            return pull, name, broker.read(name, pull.cursor, pull.count), None
        except NotFound:
            return pull, name, [], None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        keys = self.hub.close_consumer(self.cid)
        self.hub.quotas.release_subscriptions(self.tenant, len(keys))
        names = [self._names[k] for k in keys if k in self._names]
        if names:
            await self.hub.run(_unsubscribe, self.hub.broker, names)


def _refusal(exc: BrokerError, adds: int) -> BrokerError:
    """``exc`` with a message that says the request's adds were all refused."""
    what = "the add was" if adds == 1 else f"all {adds} adds of the request were"
    exc.args = (f"add refused, {what} not made: {exc}",)
    return exc


def _unsubscribe(broker: Broker, queues: Sequence[QueueName]) -> None:
    for queue in queues:
        try:
            broker.unsubscribe(queue)
        except (FailedPrecondition, NotFound):
            continue


def _ends(broker: Broker, queues: Sequence[QueueName]) -> dict[bytes, int]:
    ends: dict[bytes, int] = {}
    for queue in queues:
        try:
            ends[queue.key] = broker.queue_info(queue).next_offset
        except NotFound:
            continue
    return ends
