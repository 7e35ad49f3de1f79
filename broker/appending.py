"""The publish fast path: offsets, one log append, one index batch.

Called under the broker's lock with requests already checked (see
:mod:`broker.publishing`) and large bodies already in the log as chunks.
It is the loop a million lite-topics or a quarter of a million messages a
second go through, so it is kept flat: local names for hot callables, plain
attribute writes on registry entries (the registry's ``stage`` turns them
into expiry keys and reference counts), one branch for the common shape of
one queue and an inline body.

Order of writes, and why it is safe: the message records reach the log
first (durable per the fsync policy when ``append`` returns); the index
entries, registry changes and the covered log position follow in ONE
RocksDB batch. A crash in between leaves records past the covered position,
which replay on open indexes exactly as this would have.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker import envelope
from broker.bodies import ChunkedBody
from broker.index import keys as k
from broker.index.store import Column, IndexStore
from broker.log.commitlog import CommitLog
from broker.log.record import HEADER_SIZE
from broker.publishing import Prepared
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
) -> tuple[list[PublishResult], int]:
    """Publish ``prepared`` (bodies stored as ``bodies``); return results and covered position."""
    by_key = registry.resolve([key for keys, _, _ in prepared for key in keys], now)
    records: list[bytes] = []
    assigned: list[tuple[tuple[QueueEntry, int], ...]] = []
    head = envelope.single_head(now)
    encode_single = envelope.encode_single
    for (keys, properties, _), body in zip(prepared, bodies, strict=True):
        if len(keys) == 1 and type(body) is bytes:
            key = keys[0]
            entry = by_key[key]
            offset = entry.next_offset
            entry.next_offset = offset + 1
            assigned.append(((entry, offset),))
            records.append(encode_single(head, key, offset, properties, body))
            continue
        slots = []
        queues = []
        for key in keys:
            entry = by_key[key]
            offset = entry.next_offset
            entry.next_offset = offset + 1
            slots.append((entry, offset))
            queues.append((key, offset))
        assigned.append(tuple(slots))
        if type(body) is bytes:
            records.append(envelope.encode_inline(now, queues, properties, body))
        else:
            assert isinstance(body, ChunkedBody)
            records.append(envelope.encode_chunked(now, queues, properties, body.size, body.chunks))

    positions = log.append(records)

    batch = index.batch()
    put = batch.put
    index_column = Column.INDEX
    offset_key = k.OFFSET_KEY.pack
    encode_index = k.encode_index
    results: list[PublishResult] = []
    for position, body, placed in zip(positions, bodies, assigned, strict=True):
        if type(body) is bytes:
            value = encode_index(position, len(body))
            low = position
        else:
            assert isinstance(body, ChunkedBody)
            low = min(body.chunks)  # chunks precede the record: the message needs them
            value = encode_index(position, body.size, low)
        for entry, offset in placed:
            put(index_column, offset_key(entry.qid, offset), value)
            entry.last_active = now
            if low < entry.first_position:  # noqa: PLR1730 - a compare is cheaper than min()
                entry.first_position = low
        if len(placed) == 1:
            results.append(PublishResult(position, now, (placed[0][1],)))
        else:
            results.append(PublishResult(position, now, tuple(o for _, o in placed)))
    registry.stage(batch)
    covered = positions[-1] + HEADER_SIZE + len(records[-1])
    put(Column.META, k.META_COVERED, k.encode_u64(covered))
    index.write(batch)
    return results, covered
