"""The server's runtime around one Broker: threads, events, timers, tenants.

The broker is synchronous and may block (fsync under ``always``, RocksDB),
so its calls run in a thread pool, not on the event loop, with one measured
exception: under ``fsync: interval`` a gathered publish (see
:meth:`Hub.publish`) that fits in the active log segment runs on the loop.
Such an append waits for no disk: it is Python work under the GIL, a
page-cache write and a RocksDB memtable write, so a thread adds no
parallelism, only hand-offs (an executor hop, a wake-up back, the GIL
passing between two threads at every syscall). Inline, the produce
benchmark's server spends ~2 us less CPU per message and serves ~20% more
messages a second; fan-in delivery p99 does not move. An append that would
start a new segment (whose rotation fsyncs the old one) still goes to the
pool, as does everything under ``always``.

The event-driven pull engine lives on the event loop; the broker's publish
listener hands it each append's end offsets with ``call_soon_threadsafe``
(one hop per publish batch, not per message), or ``call_soon`` when the
append ran on the loop.

Also here: idempotent producers (:mod:`broker.producers`) and tenant quotas
(:mod:`broker.tenancy`) around publishing, the lease-deadline timer that
makes expired leases redeliverable, and the periodic ``expire()`` pass
(whose report of removed lite-topics comes off the tenants' counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, ParamSpec, TypeVar

from broker.errors import BrokerError, NotFound
from broker.gathering import Gatherer
from broker.producers import (
    Journaled,
    Outcome,
    ProducerState,
    ProducerTable,
    decode_journal,
    journal_queue,
)
from broker.producers import journal_request as make_journal
from broker.store import Broker
from broker.subscriptions import Engine
from broker.tenancy import Quotas
from broker.types import Message, PublishRequest, PublishResult, QueueName

__all__ = ["Hub", "Outcomes", "Stored"]

log = logging.getLogger("tidegate.broker")

P = ParamSpec("P")
T = TypeVar("T")

# One publish call waiting to be gathered: tenant, requests, producer journal
# entry, body bytes.
_Publish = tuple[str, Sequence[PublishRequest], PublishRequest | None, int]


class Stored(NamedTuple):
    """The outcome of one published message (``offsets`` empty: an unknown duplicate).

    A NamedTuple, like the broker's PublishResult: one is made per message.
    """

    offsets: tuple[int, ...]
    timestamp: float
    duplicate: bool
    sequence: int


class Outcomes(NamedTuple):
    """A publish call's outcome in bulk (what a compact batch is answered from).

    The first ``len(duplicates)`` requests were duplicates, answered as
    :meth:`Hub.publish` answers them; the rest were stored, in order, with
    the broker's ``results``, the first of them with producer sequence
    ``first`` and the next ones counting up from it (every sequence is 0
    without a producer, and ``first`` then too).
    """

    duplicates: list[Stored]
    results: list[PublishResult]
    first: int


class Hub:
    """Owns the engine and the broker's thread pool; shared by every RPC."""

    def __init__(
        self,
        broker: Broker,
        *,
        quotas: Quotas,
        clock: Callable[[], float] = time.time,
        threads: int = 8,
        expire_interval_s: float = 5.0,
        recount_every: int = 60,
        lease_tick_s: float = 0.25,
    ) -> None:
        self.broker = broker
        self.quotas = quotas
        self.clock = clock
        self.engine = Engine()
        self.producers = ProducerTable()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="broker")
        self._expire_interval = expire_interval_s
        self._recount_every = recount_every
        self.recounts = 0  # full lite-topic recounts since start (tests, stats)
        self._lease_tick = lease_tick_s
        self._wakers: dict[int, asyncio.Event] = {}
        self._next_cid = 0
        self._producer_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._gatherer: Gatherer[_Publish, list[PublishResult]] = Gatherer(self._store_gathered)
        self._gather_bytes = broker.settings.chunk_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self.inline_runs = 0  # gathered publishes stored on the loop (tests, stats)
        self._syncing: asyncio.Task[None] | None = None
        self._sync_again = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Count limited tenants' lite-topics, hook the broker, start the timers."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self._count_lite_topics()
        self.broker.add_publish_listener(self._on_publish)
        self._tasks = [
            asyncio.create_task(self._lease_timer(), name="lease-timer"),
            asyncio.create_task(self._expirer(), name="expirer"),
        ]

    async def stop(self) -> None:
        """Stop the timers and the thread pool (waiting for calls under way)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._syncing is not None:
            await self._syncing  # the acks it covers reach the disk before the broker closes
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a (blocking) broker call in the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def run_write(
        self,
        nbytes: int,
        records: int,
        fn: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run a broker call that appends ``records`` records of about ``nbytes``
        (0, 0: only index writes): on the loop when it cannot wait for the
        disk or for another thread (see the module doc), else in the pool
        like :meth:`run`."""
        if self.broker.publish_waits(nbytes, records):
            return await self.run(fn, *args, **kwargs)
        self.inline_runs += 1
        return fn(*args, **kwargs)

    async def run_settle(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run acks or nacks made with ``sync=False`` (they never wait for the
        disk): on the loop unless another thread holds the broker."""
        if self.broker.settles_wait():
            return await self.run(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    def sync_soon(self) -> None:
        """Have the index synced shortly (``fsync: always``, after acks made
        without it): one sync in the pool at a time, shared by every change
        made before it starts; changes made while it runs get the next one."""
        if self._syncing is not None and not self._syncing.done():
            self._sync_again = True
            return
        self._syncing = asyncio.get_running_loop().create_task(self._sync(), name="index-sync")

    async def _sync(self) -> None:
        while True:
            self._sync_again = False
            try:
                await self.run(self.broker.sync_index)
            except (BrokerError, RuntimeError):
                return  # closed or stopping: the broker refuses what comes next
            except Exception:  # an I/O error: the broker has failed and says so from now on
                log.exception("syncing the index after acks failed")
                return
            if not self._sync_again:
                return

    # -------------------------------------------------------------- events

    def _on_publish(self, ends: Mapping[bytes, int]) -> None:
        """Under the broker's lock: hand the ends to the loop, nothing more."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            if threading.get_ident() == self._loop_thread:
                loop.call_soon(self._appended, dict(ends))  # an inline append: no wake-up
                return
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._appended, dict(ends))

    def _appended(self, ends: Mapping[bytes, int]) -> None:
        self.wake(self.engine.appended(ends))

    def wake(self, cids: Sequence[int]) -> None:
        wakers = self._wakers
        for cid in cids:
            event = wakers.get(cid)
            if event is not None:
                event.set()

    def wake_all(self) -> None:
        for event in self._wakers.values():
            event.set()

    def open_consumer(self, *, grouped: bool) -> tuple[int, asyncio.Event]:
        self._next_cid += 1
        cid = self._next_cid
        self.engine.open(cid, grouped=grouped)
        event = asyncio.Event()
        self._wakers[cid] = event
        return cid, event

    def close_consumer(self, cid: int) -> list[bytes]:
        self._wakers.pop(cid, None)
        return self.engine.close(cid)

    async def _lease_timer(self) -> None:
        while True:
            deadline = self.engine.next_deadline()
            now = self.clock()
            if deadline is not None and deadline <= now:
                self.wake(self.engine.due(now))
                continue
            wait = self._lease_tick if deadline is None else min(self._lease_tick, deadline - now)
            await asyncio.sleep(max(wait, 0.001))

    async def _expirer(self) -> None:
        """Expire every ``expire_interval_s``; take each pass's removals off the
        limited tenants' counts, and recount them in full every ``recount_every``
        passes.

        The subtraction keeps a count exact in O(namespaces) per pass. The
        recount is the safety net for the races a count kept by deltas has:
        a publish that saw a lite-topic alive just before expiry removed it
        recreates it uncounted, and two concurrent publishes creating one
        lite-topic both count it. It scans a tenant's registry slice, so it
        is O(its lite-topics) and runs rarely (every 5 minutes by default).
        """
        passes = 0
        while True:
            await asyncio.sleep(self._expire_interval)
            passes += 1
            try:
                report = await self.run(self.broker.expire)
                self.forget_expired(report.expired_by_namespace)
                if passes % self._recount_every == 0:
                    await self._count_lite_topics()
            except BrokerError as exc:
                log.warning("expiry pass failed: %s", exc)

    def forget_expired(self, removed: Mapping[str, int]) -> None:
        """Take lite-topics that expiry removed off their limited tenants' counts."""
        quotas = self.quotas
        for tenant, count in removed.items():
            if quotas.counts_lite_topics(tenant):
                quotas.release_lite_topics(tenant, count)

    async def _count_lite_topics(self) -> None:
        """Set each limited tenant's exact lite-topic count (a scan of its registry keys)."""
        self.recounts += 1
        for tenant in self.quotas.limits:
            if self.quotas.counts_lite_topics(tenant):
                count = await self.run(self.broker.lite_topic_count, tenant)
                self.quotas.set_lite_topics(tenant, count)

    # ------------------------------------------------------------- publish

    async def publish(
        self,
        tenant: str,
        requests: Sequence[PublishRequest],
        *,
        producer: str = "",
        first: int = 0,
    ) -> list[Stored]:
        """Publish for ``tenant`` (its namespace is already in each request).

        With ``producer``, messages at or below the producer's highest stored
        sequence are duplicates: not stored, answered with what is known.
        """
        duplicates, results, start = await self.publish_outcomes(
            tenant, requests, producer=producer, first=first
        )
        if not producer:
            return [Stored(r.offsets, r.timestamp, False, 0) for r in results]
        duplicates += [
            Stored(r.offsets, r.timestamp, False, start + i) for i, r in enumerate(results)
        ]
        return duplicates

    async def publish_outcomes(
        self,
        tenant: str,
        requests: Sequence[PublishRequest],
        *,
        producer: str = "",
        first: int = 0,
        sizes: tuple[int, int] | None = None,
    ) -> Outcomes:
        """:meth:`publish` without a :class:`Stored` per stored message.

        ``sizes``: the requests' total and largest body size, when the caller
        knows every body is bytes (it spares a pass over them).

        The duplicates are always a prefix: with ``producer``, request i has
        sequence ``first + i``, and exactly those at or below the producer's
        highest stored sequence (the first ``max(0, last - first + 1)``) are
        not stored again. A compact batch's answer relies on this.
        """
        if not producer:
            return Outcomes([], await self._publish(tenant, requests, None, sizes), 0)
        key = (tenant, producer)
        lock = self._producer_locks.get(key)
        if lock is None:
            lock = self._producer_locks[key] = asyncio.Lock()
        async with lock:
            state = self.producers.get(tenant, producer)
            if state is None:
                state = await self.run(self._load_producer, tenant, producer)
                self.producers.put(tenant, producer, state)
            skip = min(len(requests), max(0, state.last - first + 1))
            journaled = state.journaled
            if (
                journaled is not None
                and first <= journaled.first + len(journaled.destinations) - 1
                and first + skip - 1 >= journaled.first
            ):
                # Looked up once: what is not found stays unknown. A lookup that
                # fails (the store refusing reads) is tried again next time.
                state.remember(await self.run(self._recall, journaled))
                state.journaled = None
            stored: list[Stored] = []
            for i in range(skip):
                known = state.known(first + i)
                if known is None:
                    stored.append(Stored((), 0.0, True, first + i))
                else:
                    stored.append(Stored(known[0], known[1], True, first + i))
            fresh = requests[skip:]
            start = first + skip
            if not fresh:
                return Outcomes(stored, [], start)
            last = first + len(requests) - 1
            journal = make_journal(tenant, producer, last, fresh)
            results = await self._publish(tenant, fresh, journal, None if skip else sizes)
            state.record(start, [(r.offsets, r.timestamp, 0) for r in results])
            return Outcomes(stored, results, start)

    async def _publish(
        self,
        tenant: str,
        requests: Sequence[PublishRequest],
        journal: PublishRequest | None,
        sizes: tuple[int, int] | None = None,
    ) -> list[PublishResult]:
        """Store ``requests`` (and the journal entry); gathered with concurrent calls
        unless a body is large or streamed, which would hold the others up.
        ``sizes``: the bodies' total and largest size, all of them bytes."""
        limit = self._gather_bytes
        extra = 0  # the journal entry's body counts towards the append's size
        if journal is not None and type(journal[1]) is bytes:
            extra = len(journal[1])
        if sizes is not None:
            size, largest = sizes
            if largest > limit:
                return await self.run(self._store, tenant, requests, journal)
            return await self._gatherer((tenant, requests, journal, size + extra))
        size = extra
        for request in requests:
            body = request[1]
            if type(body) is not bytes or len(body) > limit:
                return await self.run(self._store, tenant, requests, journal)
            size += len(body)
        return await self._gatherer((tenant, requests, journal, size))

    async def _store_gathered(
        self, items: list[_Publish]
    ) -> list[list[PublishResult] | BaseException]:
        size = sum(item[3] for item in items)
        count = sum(len(item[1]) + (item[2] is not None) for item in items)
        return await self.run_write(size, count, self._store_many, items)

    def _store_many(self, items: list[_Publish]) -> list[list[PublishResult] | BaseException]:
        """Thread: the gathered calls in one append (each checked and reserved on its own)."""
        outcomes: list[list[PublishResult] | BaseException] = []
        batches: list[list[PublishRequest]] = []
        placed: list[tuple[int, str, int, int]] = []  # outcome slot, tenant, reserved, count
        for tenant, requests, journal, _ in items:
            try:
                new = self.new_lite_topics(tenant, requests)
                self.quotas.reserve_lite_topics(tenant, new)
            except BrokerError as exc:
                outcomes.append(exc)
                continue
            placed.append((len(outcomes), tenant, new, len(requests)))
            outcomes.append([])
            batches.append(list(requests) if journal is None else [*requests, journal])
        try:
            stored = self.broker.publish_batches(batches) if batches else []
        except BaseException:
            for _, tenant, new, _ in placed:
                self.quotas.release_lite_topics(tenant, new)
            raise
        for (slot, tenant, new, count), outcome in zip(placed, stored, strict=True):
            if isinstance(outcome, BaseException):
                self.quotas.release_lite_topics(tenant, new)
                outcomes[slot] = outcome
            else:
                outcomes[slot] = outcome[:count]
        return outcomes

    def _load_producer(self, tenant: str, producer: str) -> ProducerState:
        queue = journal_queue(tenant, producer)
        try:
            info = self.broker.queue_info(queue)
        except NotFound:
            return ProducerState()
        if info.next_offset == 0:
            return ProducerState()
        found = self.broker.read(queue, info.next_offset - 1, 1)
        if not found:
            return ProducerState()
        entry = found[0]
        body = b"".join(self.broker.open_body(entry)) if entry.chunked else entry.body
        return decode_journal(body, entry.position, entry.timestamp)

    def _recall(self, journaled: Journaled) -> dict[int, Outcome]:
        """Thread: the outcomes of a journal entry's messages, found in their queues."""
        ends = {
            queue: self._batch_end(queue, count, journaled)
            for queue, count in journaled.counts().items()
        }
        return journaled.outcomes(ends)

    def _batch_end(self, queue: QueueName, count: int, journaled: Journaled) -> int | None:
        """Thread: the offset of the last message ``queue`` got from the journaled batch,
        or None when it cannot be told (the queue expired, retention took the messages).

        The batch's ``count`` messages in ``queue`` are the last ones logged
        before the journal entry (module doc of :mod:`broker.producers`), and
        offsets grow with log positions, so this is the highest offset below
        the entry's position: a gallop back from the queue's end (a resend
        mostly comes soon, while the batch is at or near the end), then a
        bisection. Both ends of the run must carry the append's timestamp.
        """
        position, timestamp = journaled.position, journaled.timestamp
        try:
            info = self.broker.queue_info(queue)

            def at(offset: int) -> Message | None:
                found = self.broker.read(queue, offset, 1)
                return found[0] if found and found[0].offset == offset else None

            low, high = info.min_offset, info.next_offset - 1
            if high - low + 1 < count:
                return None
            newest = at(high)
            if newest is None:
                return None
            if newest.position < position:
                end = high
            else:
                above, step = high, 1  # above: known to lie at or after the entry
                while True:
                    probe = max(low, above - step)
                    message = at(probe)
                    if message is None:
                        return None
                    if message.position < position:
                        below = probe
                        break
                    if probe == low:
                        return None
                    above, step = probe, step * 2
                while above - below > 1:
                    middle = (above + below) // 2
                    message = at(middle)
                    if message is None:
                        return None
                    if message.position < position:
                        below = middle
                    else:
                        above = middle
                end = below
            if end - count + 1 < low:
                return None
            last, first = at(end), at(end - count + 1)
        except NotFound:
            return None
        if last is None or first is None:
            return None
        if last.timestamp != timestamp or first.timestamp != timestamp:
            return None
        return end

    def _store(
        self, tenant: str, requests: Sequence[PublishRequest], journal: PublishRequest | None
    ) -> list[PublishResult]:
        """Thread: one call's publish on its own, with the same reserve and release."""
        outcome = self._store_many([(tenant, requests, journal, 0)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def new_lite_topics(self, tenant: str, requests: Sequence[PublishRequest]) -> int:
        """Thread: how many lite-topics of ``requests`` do not exist yet (limited tenants only)."""
        if not self.quotas.counts_lite_topics(tenant):
            return 0
        names = {QueueName(tenant, r.topic, lite) for r in requests for lite in r.lite_topics}
        return sum(1 for name in names if not self.broker.exists(name))
