"""Trimming a queue: dropping its index entries below an offset, durably.

:meth:`broker.store.Broker.trim` is the caller; this module holds what it
and replay share, all under the broker's lock:

- the **trim record**, a log record that says "queue Q keeps nothing below
  offset N"::

      trim  kind=3 u8 | name_len u16 | name | below u64

  (kinds 1 and 2 are :mod:`broker.envelope`'s message and chunk records;
  replay skips every kind it does not know, so an older build ignores it).
  The index alone would survive an ordinary crash (the entries go in one
  RocksDB batch with the queue's new low offset, and replay never
  re-indexes an offset below a queue's end), but an index rebuilt from the
  log would bring the trimmed entries back while their segments last. The
  record comes after every message it trims in the log, so a segment
  holding a trimmed message is deleted no later than the record that trims
  it.
- :func:`drop_below`, one bounded chunk of the index change;
- :class:`ChunkedLows`, which finds the lowest log position the kept
  entries still need without reading them all on every trim.

Why the lowest needed position needs care: in a published queue record
positions grow with offsets, so the first kept message bounds every later
*record*; but a chunked body's chunks are written before its record,
outside the lock, and a slow writer's chunks can sit below records of
earlier offsets. So the kept entries' needed position is the lower of the
first kept one's and the lowest chunk of any kept chunked message.
:class:`ChunkedLows` remembers, per queue, the chunked entries it has seen
and how far it has looked, so each index entry is read once per open.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from broker.index import keys as k
from broker.index.store import Column, IndexStore, WriteOps
from broker.topics import QueueEntry, Registry

__all__ = ["TRIM", "ChunkedLows", "decode_trim", "drop_below", "encode_trim"]

TRIM = 3
_HEAD = struct.Struct(">BH")
_Q = struct.Struct(">Q")
_POINT_DELETE_MAX = 64  # as the registry's remove(): a range tombstone beyond this
_INLINE_VALUE = k.INDEX_VALUE.size


def encode_trim(name: bytes, below: int) -> bytes:
    return _HEAD.pack(TRIM, len(name)) + name + _Q.pack(below)


def decode_trim(payload: bytes) -> tuple[bytes, int]:
    """(queue key, below offset) of a trim record; ValueError if it is malformed."""
    try:
        kind, size = _HEAD.unpack_from(payload)
        name = payload[_HEAD.size : _HEAD.size + size]
        (below,) = _Q.unpack_from(payload, _HEAD.size + size)
    except struct.error as exc:
        raise ValueError(f"trim record cut short: {exc}") from exc
    if kind != TRIM or len(name) != size or len(payload) != _HEAD.size + size + _Q.size:
        raise ValueError("not a well-formed trim record")
    return bytes(name), below


def drop_below(registry: Registry, entry: QueueEntry, stop: int, batch: WriteOps) -> int:
    """Delete ``entry``'s index entries in ``[min_offset, stop)`` into ``batch`` and
    move its low offset to ``stop``; returns how many offsets went.

    The first needed log position is left alone (a conservative bound)
    unless nothing is left; :meth:`ChunkedLows.first_needed` moves it up.
    """
    low = entry.min_offset
    if stop <= low:
        return 0
    qid = entry.qid
    if stop - low <= _POINT_DELETE_MAX:
        for offset in range(low, stop):
            batch.delete(Column.INDEX, k.offset_key(qid, offset))
    else:
        batch.delete_range(Column.INDEX, k.offset_key(qid, low), k.offset_key(qid, stop))
    registry.join(entry)  # staged with the batch: the new low offset goes with the deletes
    entry.min_offset = stop
    if stop >= entry.next_offset:
        registry.move_first(entry, k.NO_POSITION)
    return stop - low


@dataclass
class _Seen:
    upto: int  # entries below this offset have been looked at
    chunked: list[tuple[int, int]] = field(default_factory=list)  # (offset, lowest), by offset


class ChunkedLows:
    """Per queue: the chunked messages among the entries looked at so far.

    In memory only, for at most ``capacity`` queues (least recently trimmed
    go first): a queue it forgot, or a reopen, costs one more full look.
    Keyed by queue id, which is never reused, so a removed queue's record
    can only go stale, never wrong.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[int, _Seen] = OrderedDict()

    def look(self, index: IndexStore, entry: QueueEntry, limit: int) -> bool:
        """Read up to ``limit`` more of ``entry``'s index entries; True once all
        up to its end have been read."""
        seen = self._seen.get(entry.qid)
        if seen is None:
            seen = self._seen[entry.qid] = _Seen(entry.min_offset)
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
        else:
            self._seen.move_to_end(entry.qid)
        start = max(seen.upto, entry.min_offset)
        end = entry.next_offset
        if start >= end:
            seen.upto = max(seen.upto, start)
            return True
        stop = min(end, start + limit)
        _, hi = k.queue_range(entry.qid)
        scan_end = k.offset_key(entry.qid, stop) if stop < end else hi
        for key, raw in index.scan(Column.INDEX, k.offset_key(entry.qid, start), scan_end):
            if len(raw) != _INLINE_VALUE:
                seen.chunked.append((k.offset_of(key)[1], k.decode_index(raw).lowest))
        seen.upto = stop
        return stop >= end

    def first_needed(self, index: IndexStore, entry: QueueEntry) -> int:
        """The lowest log position ``entry``'s kept messages need (after :meth:`look`
        returned True in the same hold of the lock)."""
        seen = self._seen[entry.qid]
        keep = entry.min_offset
        chunked = [(o, low) for o, low in seen.chunked if o >= keep]
        seen.chunked = chunked
        lo = k.offset_key(entry.qid, keep)
        _, hi = k.queue_range(entry.qid)
        first = k.NO_POSITION
        for _, raw in index.scan(Column.INDEX, lo, hi, limit=1):
            first = k.locate(raw)[1]
        for _, low in chunked:
            first = min(first, low)
        return first

    def forget(self, qid: int) -> None:
        self._seen.pop(qid, None)
