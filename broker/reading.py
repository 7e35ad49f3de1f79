"""Reading queues: index entries to messages, skipping what retention took.

Callers hold the broker's lock. A read that finds the front of a queue gone
(its log segments were deleted by retention) moves the queue's first offset
past it and drops those index entries, so the next read starts at the first
surviving message without searching again.
"""

from __future__ import annotations

import contextlib
import errno
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import crc32c

from broker import envelope
from broker.bodies import read_chunks
from broker.errors import NotFound
from broker.index import keys as k
from broker.index.store import Column, IndexStore, WriteOps
from broker.log import record
from broker.log.commitlog import CommitLog
from broker.log.segment import Span
from broker.tail import Tails
from broker.topics import QueueEntry, Registry
from broker.types import Message, QueueName

__all__ = ["ColdRead", "Reader"]

_SCAN_FROM = 8  # consecutive offsets from which a range scan beats a multi-get (measured)

# A frame's header and the head of the one-queue message record it holds, read
# in one call: length, version, crc; kind, flags, timestamp, queues, name_len.
_FRAMED_SINGLE = struct.Struct(record.HEADER_FORMAT + envelope.SINGLE_HEAD_FORMAT[1:])
_HEADER_SIZE = record.HEADER_SIZE
# A read of this many consecutive offsets or more walks the log (Reader._walk);
# the walk reads this much first, then what is left at the size walked so far,
# at most _WALK_MOST at a time.
_WALK_FROM = 16
_WALK_FIRST = 64 * 1024
_WALK_MOST = 8 * 1024 * 1024
# A queue whose walk stopped early is not walked for its next this many reads
# (its records lie among others'); at most this many such queues are kept.
_WALK_SKIP = 16
_SCATTERED_MOST = 65536
# What the read loops (Reader._walk, Reader._decode) take as locals.
_DECODING = (
    crc32c.crc32c,
    record.CRC_SEED,
    record.VERSION,
    envelope.MESSAGE,
    envelope.EMPTY_PROPERTIES,
    envelope.delivery_in,
    _HEADER_SIZE,
)
# From a payload's start to its properties: the single head and the offset (u64),
# plus the name.
_TO_PROPERTIES = struct.calcsize(envelope.SINGLE_HEAD_FORMAT) + 8


class ColdRead(Exception):  # noqa: N818 - a signal inside the broker, not an error
    """A read under :meth:`Reader.warm_only` would have waited for the disk:
    nothing was read; run it in the pool instead."""


class Reader:
    """Reads of one broker's queues (under its lock)."""

    def __init__(
        self,
        log: CommitLog,
        index: IndexStore,
        registry: Registry,
        write: Callable[[WriteOps], None],
    ) -> None:
        self._log = log
        self._index = index
        self._registry = registry
        self._write = write  # stages the registry into a batch and writes it
        self.tails: Tails | None = None  # the newest messages of subscribed queues
        self._local = threading.local()  # per thread: whether reads may wait, see warm_only
        self._scattered: dict[int, int] = {}  # qid: reads left before it is walked again

    @contextlib.contextmanager
    def warm_only(self) -> Iterator[None]:
        """Within the block, on this thread, a read whose log records are not all
        in the page cache raises :class:`ColdRead` instead of waiting for the
        disk (which must not happen on the event loop)."""
        self._local.nowait = True
        try:
            yield
        finally:
            self._local.nowait = False

    def read(
        self,
        name: QueueName,
        entry: QueueEntry,
        from_offset: int,
        max_messages: int,
        batch: WriteOps | None = None,
        *,
        attempt: int = 0,
    ) -> list[Message]:
        """Up to ``max_messages`` of ``entry``'s messages from ``from_offset`` on,
        stamped with ``attempt`` (a consumer group's first delivery is 1).

        When the read moves the queue's first offset, the change goes into
        ``batch`` if given (the caller writes it), else it is written here.
        """
        start = max(from_offset, entry.min_offset)
        if start >= entry.next_offset:
            return []
        log_start = self._log.start_position
        tails = self.tails
        if tails is not None and not name.is_dead_letter:
            stop = min(entry.next_offset, start + max_messages)
            kept = tails.read(name, entry.qid, start, stop, log_start=log_start, attempt=attempt)
            if kept is not None:
                return kept
        if name.is_dead_letter:  # dead letters point anywhere: no order to search or walk
            offsets = range(start, min(entry.next_offset, start + max_messages))
            return self.messages_at(name, entry, offsets, log_start, attempt=attempt)
        start, first = self._skip_lost(entry, start, log_start, batch)
        offsets = range(start, min(entry.next_offset, start + max_messages))
        walked = self._walk(name, entry, offsets, log_start, first, attempt=attempt)
        if len(walked) == len(offsets):
            return walked
        rest = range(offsets.start + len(walked), offsets.stop)
        return walked + self.messages_at(name, entry, rest, log_start, attempt=attempt)

    def _walk(
        self,
        name: QueueName,
        entry: QueueEntry,
        offsets: range,
        log_start: int,
        first_entry: bytes | None = None,
        *,
        attempt: int,
    ) -> list[Message]:
        """The messages at the first of ``offsets`` and after, as far as the log
        holds them one after another: a queue's records published together lie
        side by side, so from the first one's position (its index entry,
        ``first_entry`` where the caller has read it already) each next record
        is read from the log itself instead of from the index.

        Each record is checked to be what the index would have given: a whole
        valid frame of a one-queue message record naming this queue and the
        next offset. (The broker removes a queue's index entries only from its
        front, by retention and trims, or its end, by recovery's cut of a torn
        tail, never from between: a record of the next offset is the one the
        index names.) The walk stops at the first that is not (another queue's
        record, a chunked body, a record of several queues, a bad frame: the
        index path reads the rest, and reports the damage), and it is not
        tried for short reads or, for a while, for a queue whose records were
        found scattered (see :data:`_WALK_SKIP`). Under :meth:`warm_only` it
        also stops where the page cache does: what it read ahead need not be
        cached, the records the index path then reads must be.
        """
        qid = entry.qid
        skip_left = self._scattered.get(qid)
        if len(offsets) < _WALK_FROM or skip_left:
            if skip_left:
                self._scattered[qid] = skip_left - 1
            return []
        raw = first_entry
        if raw is None:
            raw = self._index.get(Column.INDEX, k.OFFSET_KEY.pack(qid, offsets.start))
        if raw is None:
            return []
        position, lowest = k.locate(raw)
        if lowest != position or position < log_start:
            return []  # a chunked body, or lost to retention: the index path sorts it out
        nowait = getattr(self._local, "nowait", False)
        out: list[Message] = []
        append = out.append
        new = tuple.__new__
        key = name.key
        key_len = len(key)
        # The frame header, the record's head, this queue's name, its offset and
        # the properties' count, in one unpack.
        walked_head = struct.Struct(f"{_FRAMED_SINGLE.format}{key_len}sQH")
        unpack = walked_head.unpack_from
        head_size = walked_head.size
        crc, seed, version_ok, single, empty, delivery_in, skip = _DECODING
        limit = self._log.config.max_record_bytes
        offset, stop = offsets.start, offsets.stop
        want = _WALK_FIRST
        cold = False
        while offset < stop:
            try:
                data = self._log.read_raw(position, want, nowait=nowait)
            except BlockingIOError:  # past the cached bytes: the index path reads the rest
                cold = True  # (and says ColdRead if its own records are not cached)
                break
            if data is None:
                break
            view = memoryview(data)
            size = len(data)
            at = 0
            matched = True
            first = offset
            cut = 0
            while offset < stop and at + head_size <= size:
                (
                    length,
                    version,
                    stored,
                    kind,
                    flags,
                    timestamp,
                    queues,
                    name_len,
                    its_name,
                    its_offset,
                    properties,
                ) = unpack(data, at)
                end = at + skip + length
                if end > size:
                    cut = end - at  # cut by what was read: read on from it
                    break
                if not (
                    its_offset == offset
                    and its_name == key
                    and name_len == key_len
                    and kind == single
                    and flags == 0
                    and queues == 1
                    and version == version_ok
                    and length <= limit
                    and head_size <= end - at
                    and crc(view[at + skip : end], seed) == stored
                ):
                    matched = False
                    break
                if properties == 0:
                    message = (
                        name,
                        offset,
                        position + at,
                        timestamp,
                        empty,
                        end - at - head_size,
                        data[at + head_size : end],
                        False,
                        attempt,
                    )
                else:
                    fields = delivery_in(data, at + skip, end)
                    message = (name, offset, position + at, *fields, attempt)
                append(new(Message, message))
                offset += 1
                at = end
            view.release()
            if not matched:  # not this queue's next record
                break
            if at == 0:  # the first record runs past ``want``: read it whole, once
                if size == want < cut <= _WALK_MOST:
                    want = min(_WALK_MOST, (stop - offset) * cut)
                    continue
                break
            # What is left, at the size of what was walked.
            want = min(_WALK_MOST, (stop - offset) * at // (offset - first) + _WALK_FIRST)
            position += at
        if not cold and len(out) < min(len(offsets), _WALK_FROM):
            if len(self._scattered) >= _SCATTERED_MOST:
                self._scattered.clear()
            self._scattered[qid] = _WALK_SKIP
        return out

    def messages_at(
        self,
        name: QueueName,
        entry: QueueEntry,
        offsets: Iterable[int],
        log_start: int,
        *,
        attempt: int = 0,
    ) -> list[Message]:
        """The messages at ``offsets`` that still exist (retention may have taken some).

        The consumer's hot path: the index entries in one call, one batch
        read of the log (neighbouring records share a pread), and a short
        decode per record. A run of consecutive offsets (what :meth:`read`
        asks for) is one range scan of the index, about three times cheaper
        in RocksDB than a multi-get of the same keys; scattered offsets (a
        group's redeliveries) are a multi-get.
        """
        qid = entry.qid
        if type(offsets) is range and offsets.step == 1 and len(offsets) >= _SCAN_FROM:
            offsets, raws = self._index_run(qid, offsets)
        else:
            offsets = list(offsets)
            key = k.OFFSET_KEY.pack
            raws = self._index.get_many(Column.INDEX, [key(qid, o) for o in offsets])
        kept: Sequence[int]
        positions = k.positions_of(raws)  # type: ignore[arg-type]  # None-checked there
        if positions is not None and (not positions or min(positions) >= log_start):
            kept = offsets  # every entry there, plain and retained: the common run
        else:
            kept, positions = [], []
            locate = k.locate
            for offset, raw in zip(offsets, raws, strict=True):
                if raw is None:
                    continue
                position, lowest = locate(raw)
                if lowest < log_start:
                    continue  # the record or its first chunks were reclaimed
                kept.append(offset)
                positions.append(position)
        nowait = getattr(self._local, "nowait", False)
        try:
            spans = self._log.read_spans(positions, nowait=nowait)
            if spans is not None:  # the common read: ascending, retained
                return self._decode(spans, name, kept, positions, attempt=attempt, nowait=nowait)
            # None: in a corrupt stretch skipped on open
            decoded = self._log.read_parsed(positions, envelope.delivery_in, nowait=nowait)
        except BlockingIOError:
            raise ColdRead from None
        make = Message._make
        return [
            make((name, offset, position, *fields, attempt))
            for offset, position, fields in zip(kept, positions, decoded, strict=True)
            if fields is not None
        ]

    def _decode(
        self,
        spans: list[Span],
        name: QueueName,
        offsets: Sequence[int],
        positions: Sequence[int],
        *,
        attempt: int,
        nowait: bool,
    ) -> list[Message]:
        """The messages whose records lie in ``spans`` (see
        :meth:`CommitLog.read_spans`): ``offsets[i]`` of ``name`` at ``positions[i]``.

        The loop every delivered message goes through, so it does in one pass
        what :func:`record.payload_end` and :func:`envelope.delivery_in` do in
        two calls: one unpack reads the frame header and the record's head,
        the CRC is taken in place, and a plain record (one queue, no
        properties, an inline body) becomes its Message with one copy, of the
        body. Any other valid record goes through ``delivery_in``; a frame the
        span does not hold whole, or a bad one, is read alone by the log
        (which raises CorruptLog for a bad one; ``nowait``: BlockingIOError,
        as the read may wait).
        """
        out: list[Message] = []
        append = out.append
        new = tuple.__new__
        unpack = _FRAMED_SINGLE.unpack_from
        head_size = _FRAMED_SINGLE.size
        crc, seed, version_ok, single, empty, delivery_in, skip = _DECODING
        limit = self._log.config.max_record_bytes
        to_properties = _HEADER_SIZE + _TO_PROPERTIES
        for data, low, i, j in spans:
            view = memoryview(data)
            size = len(data)
            for offset, position in zip(offsets[i:j], positions[i:j], strict=True):
                at = position - low
                if at + head_size <= size:
                    length, version, stored, kind, flags, timestamp, queues, name_len = unpack(
                        data, at
                    )
                    end = at + skip + length
                    if (
                        version == version_ok
                        and length <= limit
                        and end <= size
                        and crc(view[at + skip : end], seed) == stored
                    ):
                        props = at + to_properties + name_len
                        if (
                            kind == single
                            and flags == 0
                            and queues == 1
                            and props + 2 <= end
                            and data[props] == 0
                            and data[props + 1] == 0
                        ):
                            append(
                                new(
                                    Message,
                                    (
                                        name,
                                        offset,
                                        position,
                                        timestamp,
                                        empty,
                                        end - props - 2,
                                        data[props + 2 : end],
                                        False,
                                        attempt,
                                    ),
                                )
                            )
                        else:
                            fields = delivery_in(data, at + skip, end)
                            append(new(Message, (name, offset, position, *fields, attempt)))
                        continue
                if nowait:
                    raise BlockingIOError(errno.EAGAIN, "a record past the cached span")
                payload = self._log.read(position)
                fields = delivery_in(payload, 0, len(payload))
                append(new(Message, (name, offset, position, *fields, attempt)))
            view.release()
        return out

    def _index_run(self, qid: int, offsets: range) -> tuple[list[int], list[bytes | None]]:
        """The index entries of ``offsets`` (consecutive) by one range scan: the
        offsets found and their entries (a gap, an entry removed, is left out)."""
        key = k.OFFSET_KEY.pack
        found = list(
            self._index.scan(Column.INDEX, key(qid, offsets.start), key(qid, offsets.stop))
        )
        if len(found) == len(offsets):  # every key in the range, in order: no parsing
            return list(offsets), [raw for _, raw in found]
        unpack = k.OFFSET_KEY.unpack
        return [unpack(found_key)[1] for found_key, _ in found], [raw for _, raw in found]

    def _skip_lost(
        self, entry: QueueEntry, start: int, log_start: int, batch: WriteOps | None
    ) -> tuple[int, bytes | None]:
        """First offset >= ``start`` whose record retention kept, and its index
        entry when that is ``start``'s (read here anyway); forget those before it.

        Record positions grow with offsets in a published queue, so a binary
        search finds the edge in log2(n) point reads.
        """
        index = self._index

        def lost(raw: bytes | None) -> bool:
            return raw is None or k.decode_index(raw).position < log_start

        first = index.get(Column.INDEX, k.offset_key(entry.qid, start))
        if not lost(first):
            return start, first
        lo, hi = start + 1, entry.next_offset
        while lo < hi:
            mid = (lo + hi) // 2
            if lost(index.get(Column.INDEX, k.offset_key(entry.qid, mid))):
                lo = mid + 1
            else:
                hi = mid
        self._forget_below(entry, lo, log_start, batch)
        return lo, None

    def _forget_below(
        self, entry: QueueEntry, offset: int, log_start: int, batch: WriteOps | None
    ) -> None:
        """Drop index entries below ``offset`` (all lost to retention)."""
        own = batch is None
        target = self._index.batch() if batch is None else batch
        target.delete_range(
            Column.INDEX, k.offset_key(entry.qid, entry.min_offset), k.offset_key(entry.qid, offset)
        )
        first = (
            k.NO_POSITION if offset >= entry.next_offset else max(entry.first_position, log_start)
        )
        self._registry.move_first(entry, first)  # joins the working set: staged with the batch
        entry.min_offset = offset
        if own:
            self._write(target)

    def open_body(self, message: Message) -> Iterator[bytes]:
        """The body of ``message`` as a stream of chunks (one chunk in memory at a time)."""
        if not message.chunked:
            return iter((message.body,))
        what = f"message {message.queue}@{message.offset}"
        try:
            payload = self._log.read(message.position)
        except NotFound as exc:
            raise NotFound(f"{what} is gone: {exc}") from exc
        rec = envelope.decode_message(payload, with_body=False)
        return read_chunks(self._log, rec.chunks, what)
