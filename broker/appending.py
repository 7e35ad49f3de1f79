"""The publish fast path: offsets, one log append, one index batch.

Called under the broker's lock with requests already checked (see
:mod:`broker.publishing`) and large bodies already in the log as chunks.
It is the loop a million lite-topics or a quarter of a million messages a
second go through, so it is kept flat: local names for hot callables, plain
attribute writes on registry entries (the registry's ``stage`` turns them
into expiry keys and reference counts), and *runs*: consecutive messages
for the same one queue with the same properties and inline bodies (what a
producer's batch almost always is) take their offsets as one range, their
records from one prefix and their registry changes once per run.

Order of writes, and why it is safe: the message records reach the log
first (durable per the fsync policy when ``append`` returns); the index
entries, registry changes and the covered log position follow in ONE
RocksDB batch. A crash in between leaves records past the covered position,
which replay on open indexes exactly as this would have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import NamedTuple, cast

from broker import envelope
from broker.bodies import ChunkedBody
from broker.index import keys as k
from broker.index.store import Column, IndexStore
from broker.log.commitlog import CommitLog
from broker.log.record import HEADER_SIZE
from broker.publishing import Prepared
from broker.tail import Tails
from broker.topics import QueueEntry, Registry
from broker.types import PublishResult

__all__ = ["append_batch"]

Stored = bytes | ChunkedBody  # an inline body, or where its chunks are


def append_batch(
    log: CommitLog,
    index: IndexStore,
    registry: Registry,
    *,
    now: float,
    prepared: Sequence[Prepared],
    bodies: Sequence[Stored],
    tails: Tails | None = None,
) -> tuple[list[PublishResult], int, dict[bytes, QueueEntry]]:
    """Publish ``prepared`` (bodies stored as ``bodies``).

    Returns the results, the covered log position and the entry of each
    queue written (``next_offset`` is its new end, what the publish listeners
    are told; the caller builds that map only when someone listens).

    A run of one message (a batch creating many lite-topics, one message
    each) takes a plain ``(entry, offset, at, size)`` tuple and ``encode_single``:
    the run machinery's slices, ranges and NamedTuple cost more than the
    work they save when there is nothing to share.
    """
    by_key = registry.resolve(_unique_keys(prepared), now)
    records: list[bytes] = []
    plan: list[_Run | _Spread | _Single] = []
    head = envelope.single_head(now)
    encode_single = envelope.encode_single
    count = len(prepared)
    at = 0
    while at < count:
        keys, properties, _ = prepared[at]
        body = bodies[at]
        if len(keys) == 1 and type(body) is bytes:
            end = at + 1
            while (
                end < count
                and prepared[end][0] == keys
                and prepared[end][1] == properties
                and type(bodies[end]) is bytes
            ):
                end += 1
            key = keys[0]
            entry = by_key[key]
            first = entry.next_offset
            if end == at + 1:
                entry.next_offset = first + 1
                records.append(encode_single(head, key, first, properties, body))
                plan.append((entry, first, at, len(body)))
                at = end
                continue
            entry.next_offset = first + end - at
            run = cast("Sequence[bytes]", bodies[at:end])  # checked in the loop above
            records += envelope.encode_run(head, key, first, properties, run)
            plan.append(_Run(entry, first, at, end))
            at = end
            continue
        slots = []
        queues = []
        for key in keys:
            entry = by_key[key]
            offset = entry.next_offset
            entry.next_offset = offset + 1
            slots.append((entry, offset))
            queues.append((key, offset))
        plan.append(_Spread(at, tuple(slots)))
        if type(body) is bytes:
            records.append(envelope.encode_inline(now, queues, properties, body))
        else:
            assert isinstance(body, ChunkedBody)
            records.append(envelope.encode_chunked(now, queues, properties, body.size, body.chunks))
        at += 1

    positions = log.append(records)

    batch = index.batch()
    put = batch.put
    index_column = Column.INDEX
    offset_key = k.OFFSET_KEY.pack
    index_value = k.INDEX_VALUE.pack
    results: list[PublishResult] = []
    for step in plan:
        if type(step) is tuple:
            entry, offset, at, size = cast("_Single", step)
            position = positions[at]
            put(index_column, offset_key(entry.qid, offset), index_value(position, size, 0))
            entry.last_active = now
            if position < entry.first_position:  # noqa: PLR1730 - a compare is cheaper than min()
                entry.first_position = position
            results.append(PublishResult(position, now, (offset,)))
            continue
        if type(step) is _Run:
            entry, first, at, end = step
            qid = entry.qid
            spots = positions[at:end]
            offsets = range(first, first + end - at)
            run = cast("Sequence[bytes]", bodies[at:end])
            for offset, position, body in zip(offsets, spots, run, strict=True):
                put(index_column, offset_key(qid, offset), index_value(position, len(body), 0))
            entry.last_active = now
            if spots[0] < entry.first_position:  # noqa: PLR1730 - cheaper than min()
                entry.first_position = spots[0]
            results += map(PublishResult, spots, repeat(now), [(o,) for o in offsets])
            continue
        assert type(step) is _Spread
        at, placed = step
        position = positions[at]
        body = bodies[at]
        if type(body) is bytes:
            value = k.encode_index(position, len(body))
            low = position
        else:
            assert isinstance(body, ChunkedBody)
            low = min(body.chunks)  # chunks precede the record: the message needs them
            value = k.encode_index(position, body.size, low)
        for entry, offset in placed:
            put(index_column, offset_key(entry.qid, offset), value)
            entry.last_active = now
            if low < entry.first_position:  # noqa: PLR1730 - a compare is cheaper than min()
                entry.first_position = low
        results.append(PublishResult(position, now, tuple(o for _, o in placed)))
    registry.stage(batch)
    covered = positions[-1] + HEADER_SIZE + len(records[-1])
    put(Column.META, k.META_COVERED, k.encode_u64(covered))
    index.write(batch)
    if tails is not None and registry.subscribers:
        _keep_tails(tails, registry.subscribers, plan, prepared, bodies, positions, now)
    return results, covered, by_key


def _keep_tails(  # noqa: PLR0917 - the locals of append_batch, handed over once
    tails: Tails,
    subscribers: Mapping[bytes, int],
    plan: Sequence[_Run | _Spread | _Single],
    prepared: Sequence[Prepared],
    bodies: Sequence[Stored],
    positions: Sequence[int],
    now: float,
) -> None:
    """Hand the messages of subscribed queues to their tails (see :mod:`broker.tail`)."""
    decoded: dict[bytes, Mapping[str, str]] = {}

    def keep(entry: QueueEntry, first: int, at: int, end: int) -> None:
        """Messages ``[at, end)`` of the batch, from ``first`` on in ``entry``'s queue."""
        raw = prepared[at][1]
        properties = decoded.get(raw)
        if properties is None:
            properties = decoded[raw] = envelope.decode_properties(raw)
        tails.add(
            entry.key,
            entry.qid,
            first,
            positions=positions[at:end],
            timestamp=now,
            properties=properties,
            properties_bytes=len(raw),
            bodies=cast("Sequence[bytes]", bodies[at:end]),  # inline: checked by the caller
        )

    for step in plan:
        if type(step) is tuple:
            entry, offset, at, _ = cast("_Single", step)
            if entry.key in subscribers:
                keep(entry, offset, at, at + 1)
        elif type(step) is _Run:
            entry, first, at, end = step
            if entry.key in subscribers:
                keep(entry, first, at, end)
        else:
            assert type(step) is _Spread
            at, placed = step
            inline = isinstance(bodies[at], bytes)
            for entry, offset in placed:
                if entry.key not in subscribers:
                    continue
                if inline:
                    keep(entry, offset, at, at + 1)
                else:  # a chunked body is read from the log: the tail stops before it
                    tails.drop(entry.key)


class _Run(NamedTuple):
    """Messages ``[at, end)`` of a batch: one queue, offsets from ``first`` on."""

    entry: QueueEntry
    first: int
    at: int
    end: int


class _Spread(NamedTuple):
    """Message ``at`` of a batch, in several queues or with a chunked body."""

    at: int
    placed: tuple[tuple[QueueEntry, int], ...]


def _unique_keys(prepared: Sequence[Prepared]) -> list[bytes]:
    """Each queue key once, in first-seen order (one pass in C, no per-message bytecode)."""
    return list(dict.fromkeys(chain.from_iterable(map(_KEYS, prepared))))


_KEYS = itemgetter(0)

# One message to one queue with an inline body: (entry, offset, at, body size).
# A plain tuple, not a NamedTuple: building one per new lite-topic showed up
# at ~0.4 us a message in the lite-topic benchmark.
_Single = tuple[QueueEntry, int, int, int]
