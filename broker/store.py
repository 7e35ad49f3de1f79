"""Broker: the in-process store the gRPC layer builds on.

It composes the commit log (the source of truth), the RocksDB index (where
each queue's offsets point into the log), the queue registry and the
consumer-group state. One lock serialises every change to the index; large
bodies are written to the log outside it.

Publishing, in order: validate everything (nothing is written for a bad
request); write any large body as chunk records; under the lock, assign
offsets, append the message records in ONE log append (durable per the fsync
policy when it returns), then write index entries, registry changes and the
covered log position in ONE RocksDB batch. A crash between the two writes
loses nothing: opening replays the log from the covered position.

If a write fails half way the broker cannot know what the disk holds, so it
refuses every further call (FailedPrecondition) until it is reopened, which
recovers from the log.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from broker.appending import Stored, append_batch
from broker.bodies import write_body
from broker.errors import (
    BrokerError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StoreClosed,
)
from broker.groups import Groups
from broker.index import keys as k
from broker.index.rocks import RocksIndex, RocksTuning
from broker.index.store import Column, IndexStore, WriteOps
from broker.log.commitlog import CommitLog, FsyncPolicy
from broker.log.record import HEADER_SIZE
from broker.log.segment import Fsync
from broker.publishing import Prepared, Preparer
from broker.reading import Reader
from broker.replay import catch_up, check_layout, ttl_fingerprint
from broker.settings import BrokerSettings
from broker.tail import Tails
from broker.topics import QueueEntry, Registry
from broker.trimming import ChunkedLows, drop_below, encode_trim
from broker.types import (
    Body,
    BrokerStats,
    ExpireReport,
    Lease,
    Message,
    PublishRequest,
    PublishResult,
    QueueInfo,
    QueueName,
    TrimReport,
    check_namespace,
)

__all__ = ["Broker", "PublishListener"]

IndexOpener = Callable[[Path, BrokerSettings], IndexStore]
PublishListener = Callable[[Mapping[bytes, int]], None]
_EXPIRE_CHUNK = 4096
_TRIM_CHUNK = 4096  # index entries a trim deletes, or reads, per hold of the lock
_BYTES = (bytes, bytearray, memoryview)


def open_rocks(path: Path, settings: BrokerSettings) -> IndexStore:
    return RocksIndex(
        path,
        RocksTuning(
            memtable_bytes=settings.index_memory_bytes,
            write_buffer_bytes=max(1 << 20, settings.index_memory_bytes // 4),
            cache_bytes=settings.index_cache_bytes,
        ),
    )


class Broker:
    """A durable store of queues: open with :meth:`Broker.open`. Thread-safe."""

    def __init__(
        self,
        log: CommitLog,
        index: IndexStore,
        settings: BrokerSettings,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self._log = log
        self._index = index
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self._failure: BaseException | None = None
        self._registry = Registry(
            index,
            settings.ttl_for,
            granularity_s=settings.expiry_granularity_s,
            hot_capacity=settings.hot_topics,
            ref_bucket=k.ref_bucket_width(settings.segment_bytes),
        )
        self._reader = Reader(log, index, self._registry, self._write)
        self._tails = Tails()  # subscribed queues' newest messages (broker/tail.py)
        self._reader.tails = self._tails
        self._groups = Groups(self)
        self._prepare = Preparer(
            max_lite_topics=settings.max_lite_topics,
            max_message_bytes=settings.max_message_bytes,
        )
        self._inflight: dict[int, int] = {}  # chunk writers -> log end when they began
        self._inflight_seq = 0
        self._published = 0
        self._expired = 0  # queues removed by expiry since open (metrics)
        self._sync_control = settings.fsync is FsyncPolicy.ALWAYS
        self._listeners: list[PublishListener] = []
        self._lows = ChunkedLows()
        covered = index.get(Column.META, k.META_COVERED)
        self._covered = k.decode_u64(covered) if covered else 0

    @classmethod
    def open(
        cls,
        directory: Path | str,
        settings: BrokerSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        index_opener: IndexOpener = open_rocks,
        fsync: Fsync = os.fsync,
    ) -> Broker:
        """Open (or create) the store in ``directory`` (``log/`` and ``index/`` inside).

        Recovers the log (torn tail, corruption per ``skip_corrupt``) and then
        brings the index level with it, replaying what it misses. ``fsync``
        is the log's (a server passes a timed one for its latency metric).
        """
        settings = settings or BrokerSettings()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        log = CommitLog.open(
            directory / "log", settings.log_config(), wall_clock=clock, fsync=fsync
        )
        try:
            index = index_opener(directory / "index", settings)
        except BaseException:
            log.close()
            raise
        try:
            check_layout(index)
            broker = cls(log, index, settings, clock)
            broker._recover()
        except BaseException:
            index.close()
            log.close()
            raise
        return broker

    def _recover(self) -> None:
        self._covered = catch_up(
            self._log, self._index, self._registry, self._covered, ttl_fingerprint(self.settings)
        )

    # ------------------------------------------------------------ plumbing

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed()
        if self._failure is not None:
            raise FailedPrecondition(
                f"an earlier write failed ({self._failure!r}); reopen the store to recover"
            ) from self._failure

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._registry.discard_working()

    def _name(self, queue: QueueName | str) -> QueueName:
        return queue if isinstance(queue, QueueName) else QueueName.parse(queue)

    def _entry(self, name: QueueName) -> QueueEntry:
        entry = self._registry.lookup(name.key)
        if entry is None:
            raise NotFound(f"queue {name} does not exist (created on first publish or subscribe)")
        return entry

    def _write(self, batch: WriteOps | None = None) -> None:
        """Stage the registry's working set into ``batch`` (or a new one) and write it.

        A failed write leaves the cached registry ahead of RocksDB, so like a
        failed publish it stops the broker until it is reopened.
        """
        try:
            batch = self._index.batch() if batch is None else batch
            self._registry.stage(batch)
            self._index.write(batch, sync=self._sync_control)
        except BaseException as exc:
            self._fail(exc)
            raise

    # ------------------------------------------------------------- publish

    def publish(
        self,
        topic: str,
        body: Body,
        *,
        lite_topics: Sequence[str] = (),
        properties: Mapping[str, str] = MappingProxyType({}),
        namespace: str = "",
    ) -> PublishResult:
        """Publish one message to ``topic`` (or to each of its ``lite_topics``)."""
        request = PublishRequest(topic, body, tuple(lite_topics), properties, namespace)
        return self.publish_batch((request,))[0]

    def publish_batch(self, requests: Sequence[PublishRequest]) -> list[PublishResult]:
        """Publish many messages with one log append and one index write (the fast path).

        All or nothing for validation: a bad request raises before anything
        is written. Results come back in request order.
        """
        outcome = self.publish_batches((requests,))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def publish_batches(
        self, batches: Sequence[Sequence[PublishRequest]]
    ) -> list[list[PublishResult] | BrokerError]:
        """Publish several independent batches with one log append and one index write.

        Each batch is validated on its own and is all or nothing, exactly as
        :meth:`publish_batch`: a batch that breaks a rule gets its error in
        its place and nothing of it is written, while the others go on. The
        server gathers concurrent publish calls into one of these, so many
        callers share one write, one index batch and one wake-up of the
        subscribers. A failed write raises (the store is failed for all).
        """
        outcomes: list[list[PublishResult] | BrokerError] = []
        prepared: list[Prepared] = []
        bodies: list[Stored] = []
        spans: list[tuple[int, int, int]] = []  # (outcome slot, first, count)
        chunk_bytes = self.settings.chunk_bytes
        token = None
        try:
            for requests in batches:
                try:
                    mine = self._prepare.all(requests)
                    stored: list[Stored] = []
                    for _, _, body in mine:
                        if type(body) is bytes and len(body) <= chunk_bytes:
                            stored.append(body)
                            continue
                        if token is None:
                            token = self._begin_chunks()
                        stored.append(self._store_body(body))
                except BrokerError as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append([])
                if mine:
                    spans.append((len(outcomes) - 1, len(prepared), len(mine)))
                    prepared += mine
                    bodies += stored
            if not prepared:
                return outcomes
            with self._lock:
                self._check()
                try:
                    results, ends = self._append(prepared, bodies)
                except BaseException as exc:
                    self._fail(exc)
                    raise
                if self._listeners:
                    self._notify({key: entry.next_offset for key, entry in ends.items()})
            for slot, first, count in spans:
                outcomes[slot] = results[first : first + count]
            return outcomes
        finally:
            if token is not None:
                with self._lock:
                    self._inflight.pop(token, None)

    def publish_waits(self, nbytes: int, records: int) -> bool:
        """Whether publishing ``records`` messages of about ``nbytes`` of bodies may
        wait: for the disk (every publish under ``fsync: always``; under
        ``interval`` one that may start a new log segment), or for another
        thread holding the broker (it may be fsyncing or deleting segments).
        The server runs the others inline."""
        if not self._lock.acquire(blocking=False):
            return True
        try:
            return self._log.append_waits(nbytes, records)
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def warm_reads(self) -> Iterator[None]:
        """Within the block, on this thread, a read or lease whose log records
        are not all in the page cache raises :class:`~broker.reading.ColdRead`
        before it writes anything (``preadv`` with ``RWF_NOWAIT``): the server
        runs reads on its event loop only while they cannot wait for the disk.
        The tails' reads never touch the log."""
        with self._reader.warm_only():
            yield

    def add_publish_listener(self, listener: PublishListener) -> None:
        """Call ``listener(ends)`` after every publish: queue key -> its new end offset.

        This is how event-driven pull learns of appends without polling. It
        runs on the publishing thread, under the broker's lock, in append
        order, once the messages are readable; it must be quick and must not
        call the broker. What it raises is ignored: the publish succeeded.
        """
        with self._lock:
            self._listeners.append(listener)

    def _notify(self, ends: dict[bytes, int]) -> None:
        for listener in self._listeners:
            with contextlib.suppress(Exception):
                listener(ends)

    def _begin_chunks(self) -> int:
        """Hold back segment reclamation below where this writer's chunks will land."""
        with self._lock:
            self._check()
            self._inflight_seq += 1
            self._inflight[self._inflight_seq] = self._log.end_position
            return self._inflight_seq

    def _store_body(self, body: Body) -> Stored:
        return write_body(
            self._log,
            body,
            chunk_bytes=self.settings.chunk_bytes,
            limit=self.settings.max_message_bytes,
        )

    def _append(
        self, prepared: list[Prepared], bodies: list[Stored]
    ) -> tuple[list[PublishResult], dict[bytes, QueueEntry]]:
        results, covered, ends = append_batch(
            self._log,
            self._index,
            self._registry,
            now=self._clock(),
            prepared=prepared,
            bodies=bodies,
            tails=self._tails,
        )
        self._covered = covered
        self._published += len(results)
        return results, ends

    # ---------------------------------------------------------------- read

    def read(
        self, queue: QueueName | str, from_offset: int = 0, max_messages: int = 100
    ) -> list[Message]:
        """Up to ``max_messages`` messages of ``queue`` from ``from_offset`` on, in order.

        Offsets below the queue's first retained one start at that one;
        offsets at or past the end give an empty list.
        """
        name = self._name(queue)
        self._check_window(from_offset, max_messages)
        with self._lock:
            self._check()
            return self._reader.read(name, self._entry(name), from_offset, max_messages)

    def _check_window(self, from_offset: int, max_messages: int) -> None:
        if from_offset < 0:
            raise InvalidArgument(f"from_offset is {from_offset}; it must be >= 0")
        if not 1 <= max_messages <= self.settings.max_read_messages:
            raise InvalidArgument(
                f"max_messages is {max_messages}; it must be in "
                f"[1, {self.settings.max_read_messages}]"
            )

    def open_body(self, message: Message) -> Iterator[bytes]:
        """The body of ``message`` as a stream of chunks (one chunk in memory at a time).

        Reads the log directly, outside the lock, so a large body does not
        hold up publishers; NotFound if retention removed it meanwhile.
        """
        return self._reader.open_body(message)

    # --------------------------------------------------------------- queues

    def queue_info(self, queue: QueueName | str) -> QueueInfo:
        name = self._name(queue)
        with self._lock:
            self._check()
            entry = self._entry(name)
            return QueueInfo(
                name,
                entry.qid,
                entry.next_offset,
                entry.min_offset,
                entry.created,
                entry.last_active,
                self._registry.subscribers.get(name.key, 0),
                entry.ttl,
            )

    def exists(self, queue: QueueName | str) -> bool:
        """True if ``queue`` is in the registry now (it may expire at any time after)."""
        name = self._name(queue)
        with self._lock:
            self._check()
            return self._registry.lookup(name.key) is not None

    def lite_topic_count(self, namespace: str) -> int:
        """Live lite-topics in ``namespace``: a scan of its registry keys (O(count))."""
        prefix = check_namespace(namespace).encode() + b"\x00"
        end = prefix[:-1] + b"\x01"
        count = 0
        start = prefix
        while True:
            with self._lock:  # one bounded chunk at a time, as expire() does
                self._check()
                rows = self._index.scan(Column.REGISTRY, start, end, limit=4096)
                chunk = [key for key, _ in rows]
            count += sum(1 for key in chunk if b"/" in key)
            if len(chunk) < 4096:
                return count
            start = chunk[-1] + b"\x00"

    def subscribe(self, queue: QueueName | str) -> QueueInfo:
        """Count a subscriber on ``queue`` (creating it); a subscribed lite-topic never expires.

        Subscriptions are live connections, so they are counted in memory
        only: after a restart a topic's TTL runs from its last activity.
        """
        name = self._name(queue)
        with self._lock:
            self._check()
            try:
                self._registry.resolve([name.key], self._clock())
                self._write()
            except BaseException as exc:
                self._fail(exc)
                raise
            subs = self._registry.subscribers
            subs[name.key] = subs.get(name.key, 0) + 1
        return self.queue_info(name)

    def unsubscribe(self, queue: QueueName | str) -> None:
        """Drop one subscriber; the TTL of an unsubscribed lite-topic runs from now."""
        name = self._name(queue)
        with self._lock:
            self._check()
            subs = self._registry.subscribers
            count = subs.get(name.key, 0)
            if count == 0:
                raise FailedPrecondition(f"queue {name} has no subscriber to remove")
            if count == 1:
                del subs[name.key]
                self._tails.drop(name.key)
            else:
                subs[name.key] = count - 1
            entry = self._registry.lookup(name.key)
            if entry is not None:
                self._registry.join(entry)
                self._registry.touch(entry, self._clock(), None)
                self._write()

    def expire(self, now: float | None = None) -> ExpireReport:
        """Remove idle lite-topics past their TTL, apply retention, reclaim log segments.

        Works in chunks and takes the lock per chunk, so publishers are held
        up for one chunk at a time, not the whole sweep.
        """
        now = self._clock() if now is None else now
        removed = 0
        by_namespace: dict[str, int] = {}
        more = True
        while more:
            with self._lock:
                self._check()
                count, more = self._registry.expire_chunk(now, _EXPIRE_CHUNK, by_namespace)
                removed += count
                self._expired += count
        with self._lock:
            self._check()
            retained = self._log.apply_retention()
            reclaimed = self._log.delete_segments_below(self._reclaim_bound())
        return ExpireReport(removed, reclaimed, retained, MappingProxyType(by_namespace))

    def _reclaim_bound(self) -> int:
        """Log bytes below this position are needed by no live queue."""
        bound = self._covered
        lowest = self._registry.lowest_reference()
        if lowest is not None:
            # Bytes below the log's start are gone anyway, so a queue whose first
            # message was reclaimed by retention holds nothing below the start.
            bound = min(bound, max(lowest, self._log.start_position))
        for begun in self._inflight.values():
            bound = min(bound, begun)
        return bound

    def trim(self, queue: QueueName | str, below_offset: int) -> TrimReport:
        """Drop ``queue``'s messages below ``below_offset`` (at most its end).

        Reads below the new first offset then start at it, as after
        retention (an exact read finds nothing there), and the log segments
        no live queue needs any more are deleted by the next :meth:`expire`.
        Consumer groups' committed offsets are left as they are.

        Durable, and safe against a crash at any point: a trim record goes
        to the log first (so an index rebuilt from the log trims again), then
        each chunk of index deletes goes in one RocksDB batch with the
        queue's new low offset; a crash part way leaves a shorter trim,
        never a trimmed entry back (see :mod:`broker.trimming`). Works in
        chunks and takes the lock per chunk, as :meth:`expire` does.
        NotFound if the queue does not exist.
        """
        name = self._name(queue)
        if below_offset < 0:
            raise InvalidArgument(f"below_offset is {below_offset}; it must be >= 0")
        trimmed = 0
        marked = False
        target = -1  # fixed at the first chunk: what the trim record says
        while True:
            with self._lock:
                self._check()
                entry = self._entry(name)
                if target < 0:
                    target = min(below_offset, entry.next_offset)
                if target <= entry.min_offset:
                    break
                try:
                    batch = self._index.batch()
                    if not marked:
                        self._mark_trim(name, target, batch)
                        marked = True
                    stop = min(target, entry.min_offset + _TRIM_CHUNK)
                    trimmed += drop_below(self._registry, entry, stop, batch)
                    self._write(batch)
                except BaseException as exc:
                    self._fail(exc)
                    raise
        while True:
            with self._lock:
                self._check()
                entry = self._entry(name)
                if not self._first_known(name, entry):
                    continue
                first = entry.first_position
                return TrimReport(
                    name, entry.min_offset, trimmed, None if first == k.NO_POSITION else first
                )

    def _mark_trim(self, name: QueueName, below: int, batch: WriteOps) -> None:
        """Append the trim record and cover it in ``batch`` (under the lock, where
        every message record in the log is indexed)."""
        payload = encode_trim(name.key, below)
        (position,) = self._log.append([payload])
        self._covered = position + HEADER_SIZE + len(payload)
        batch.put(Column.META, k.META_COVERED, k.encode_u64(self._covered))

    def _first_known(self, name: QueueName, entry: QueueEntry) -> bool:
        """Move the queue's first needed log position up to what its kept messages
        need, reading one more chunk of its entries; False while more remain.

        Dead letters point into the log in any order: theirs stays as it is.
        """
        if name.is_dead_letter or entry.min_offset >= entry.next_offset:
            return True
        if not self._lows.look(self._index, entry, _TRIM_CHUNK):
            return False
        first = self._lows.first_needed(self._index, entry)
        if first != k.NO_POSITION and first > entry.first_position:
            try:
                self._registry.move_first(entry, first)
                self._write()
            except BaseException as exc:
                self._fail(exc)
                raise
        return True

    # -------------------------------------------------------------- groups

    def commit_offset(self, group: str, queue: QueueName | str, offset: int) -> None:
        """Set ``group``'s position on ``queue`` (acks everything below; drops its lease)."""
        self._groups.commit(group, self._name(queue), offset)

    def committed_offset(self, group: str, queue: QueueName | str) -> int | None:
        """``group``'s committed position on ``queue``, None if it never committed."""
        return self._groups.committed(group, self._name(queue))

    def lease(
        self,
        group: str,
        queue: QueueName | str,
        max_messages: int,
        lease_s: float,
        now: float | None = None,
    ) -> Lease:
        """The group's next batch of ``queue`` (see :mod:`broker.delivery`)."""
        return self._groups.lease(group, self._name(queue), max_messages, lease_s, now)

    def ack(
        self, group: str, queue: QueueName | str, offsets: Iterable[int], *, sync: bool = True
    ) -> bool:
        """Settle ``offsets``; when the batch is all settled the group's offset moves past it.

        True if the next lease may find something (the batch settled, or none
        of it is leased any more); False while the rest of it is still out.
        Under ``fsync: always`` the change is on disk when this returns;
        ``sync=False`` leaves that to a later :meth:`sync_index` (it is in the
        OS already, so a crash of the process loses nothing, one of the
        machine may undo it: the messages come again, at least once)."""
        return self._groups.ack(group, self._name(queue), offsets, sync=sync)

    def nack(
        self, group: str, queue: QueueName | str, offsets: Iterable[int], *, sync: bool = True
    ) -> bool:
        """Give ``offsets`` back: they are redelivered (attempt + 1) by the next lease
        once nothing else of their batch is still leased. True and ``sync`` as :meth:`ack`."""
        return self._groups.nack(group, self._name(queue), offsets, sync=sync)

    def sync_index(self) -> None:
        """Put every index change made so far on disk (acks made with ``sync=False``)."""
        self._check()
        try:
            self._index.sync()
        except StoreClosed:
            raise
        except BaseException as exc:
            with self._lock:
                self._fail(exc)
            raise

    def settles_wait(self) -> bool:
        """Whether an ack or nack with ``sync=False`` may wait: only for another
        thread holding the broker (see :meth:`publish_waits`)."""
        if not self._lock.acquire(blocking=False):
            return True
        self._lock.release()
        return False

    def extend(
        self, group: str, queue: QueueName | str, lease_s: float, now: float | None = None
    ) -> float:
        """Push the running lease's deadline to ``now + lease_s``; returns it."""
        return self._groups.extend(group, self._name(queue), lease_s, now)

    # ------------------------------------------------------------ lifecycle

    def stats(self) -> BrokerStats:
        with self._lock:
            self._check()
            log = self._log.stats()
            return BrokerStats(
                queues=self._registry.queue_count,
                hot_queues=self._registry.hot_count,
                subscribed_queues=len(self._registry.subscribers),
                published_messages=self._published,
                log_start=log.start_position,
                log_end=log.end_position,
                log_segments=log.segments,
                index_covered=self._covered,
                index_memory_bytes=self._index.memory_bytes(),
                counters={
                    "log_fsyncs": log.fsyncs,
                    "log_records": log.records_appended,
                    "log_appends": log.batches_appended,
                    "log_appended_bytes": log.bytes_appended,
                    "queues_created": self._registry.created,
                    "queues_expired": self._expired,
                },
            )

    def sync(self) -> None:
        """Make everything published so far durable, whatever the fsync policy."""
        with self._lock:
            self._check()
            self._log.sync()

    def close(self) -> None:
        """Close log and index. Idempotent; every later call raises StoreClosed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._log.close()
            finally:
                self._index.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Package-internal accessors for broker.groups (same lock, same state).
    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def index(self) -> IndexStore:
        return self._index

    @property
    def registry(self) -> Registry:
        return self._registry

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def log_start(self) -> int:
        return self._log.start_position

    @property
    def sync_control(self) -> bool:
        return self._sync_control

    @property
    def reader(self) -> Reader:
        return self._reader

    def check(self) -> None:
        self._check()

    def entry(self, name: QueueName) -> QueueEntry:
        return self._entry(name)

    def fail(self, exc: BaseException) -> None:
        self._fail(exc)
