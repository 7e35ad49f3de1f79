"""Bring the index level with the log on open.

The index stores, in the same atomic batch as its entries, the log position
it covers. Two things can leave them apart:

- the process died after a log append and before the index write: the log
  is ahead. :func:`replay` indexes the records after the covered position.
  It is idempotent: a (queue, offset) the registry already counts is skipped,
  so replaying a stretch twice changes nothing.
- the machine died under ``fsync=interval`` and the log lost a tail that
  RocksDB had already recorded: the index is ahead. :func:`roll_back` drops
  entries at or past the log's end, queue by queue, before anything can be
  appended at those positions again. Dead-letter queues point at records
  in any order, so theirs are checked entry by entry (the gaps left behind
  are skipped by reads).

A trim record (:mod:`broker.trimming`) is applied again where replay meets
it, so an index rebuilt from the whole log does not bring back what a trim
dropped; for an index that already has the trim it changes nothing.
"""

from __future__ import annotations

import json

from broker import envelope
from broker.errors import CorruptLog, FailedPrecondition
from broker.index import keys as k
from broker.index.store import Column, IndexStore, WriteOps
from broker.log.commitlog import CommitLog
from broker.log.record import HEADER_SIZE
from broker.settings import BrokerSettings
from broker.topics import QueueEntry, Registry
from broker.trimming import TRIM, decode_trim, drop_below
from broker.types import DLQ_PREFIX

__all__ = ["catch_up", "check_layout", "replay", "roll_back", "ttl_fingerprint"]

_RECORDS_PER_BATCH = 2000


def check_layout(index: IndexStore) -> None:
    """Stamp a new index with the layout version; refuse one of another version."""
    raw = index.get(Column.META, k.META_VERSION)
    if raw is None:
        batch = index.batch()
        batch.put(Column.META, k.META_VERSION, k.encode_u64(k.LAYOUT_VERSION))
        index.write(batch, sync=True)
    elif k.decode_u64(raw) != k.LAYOUT_VERSION:
        raise FailedPrecondition(
            f"index layout version {k.decode_u64(raw)} is not the {k.LAYOUT_VERSION} "
            "this build reads; rebuild the index from the log (delete index/ and reopen)"
        )


def ttl_fingerprint(settings: BrokerSettings) -> bytes:
    """What the expiry keys depend on: when it changes they are recomputed on open."""
    return json.dumps(
        [
            settings.default_ttl_s,
            sorted(settings.ttl_by_topic.items()),
            settings.expiry_granularity_s,
        ]
    ).encode()


def catch_up(
    log: CommitLog, index: IndexStore, registry: Registry, covered: int, fingerprint: bytes
) -> int:
    """Everything open does to the index: step back, replay, re-arm expiry; new covered."""
    end = log.end_position
    if covered > end:
        roll_back(index, registry, end)
        covered = end
    covered = replay(log, index, registry, covered)
    if index.get(Column.META, k.META_TTL_SETTINGS) != fingerprint:
        registry.rearm_all()
        batch = index.batch()
        batch.put(Column.META, k.META_TTL_SETTINGS, fingerprint)
        index.write(batch, sync=True)
    return covered


def replay(log: CommitLog, index: IndexStore, registry: Registry, covered: int) -> int:
    """Index every message record from ``covered`` on; return the new covered position."""
    start = max(covered, log.start_position)
    if start >= log.end_position:
        return max(covered, start)
    batch = index.batch()
    pending = 0
    for position, payload in log.scan(start):
        covered = position + HEADER_SIZE + len(payload)
        kind = envelope.kind_of(payload)
        if kind == TRIM:
            _replay_trim(log, registry, batch, position, payload)
        elif kind == envelope.MESSAGE:
            try:
                rec = envelope.decode_message(payload, with_body=False)
            except ValueError as exc:
                raise CorruptLog(log.directory, position, str(exc)) from exc
            entries = registry.resolve([name for name, _ in rec.queues], rec.timestamp)
            value = k.encode_index(position, rec.size, rec.low)
            low = position if rec.low is None else min(rec.low, position)
            for name, offset in rec.queues:
                entry = entries[name]
                if offset < entry.next_offset:
                    continue  # indexed before the crash
                # A gap (offset > next) means records were skipped as corrupt;
                # the offsets in between stay missing and reads step over them.
                batch.put(Column.INDEX, k.offset_key(entry.qid, offset), value)
                entry.next_offset = offset + 1
                registry.touch(entry, rec.timestamp, low)
        pending += 1
        if pending >= _RECORDS_PER_BATCH:
            _commit(index, registry, batch, covered)
            batch = index.batch()
            pending = 0
    _commit(index, registry, batch, covered)
    return covered


def _replay_trim(
    log: CommitLog, registry: Registry, batch: WriteOps, position: int, payload: bytes
) -> None:
    """Apply a trim record again: what it trimmed was indexed again before it.

    The entries it drops may still be only in ``batch``; its deletes follow
    their puts there, so they win. A queue the record names that is not here
    has nothing below the record to drop. The first needed log position
    stays where re-indexing put it (a safe, low bound) until the next live
    trim reads the queue again.
    """
    try:
        name, below = decode_trim(payload)
    except ValueError as exc:
        raise CorruptLog(log.directory, position, str(exc)) from exc
    entry = registry.lookup(name)
    if entry is not None:
        drop_below(registry, entry, min(below, entry.next_offset), batch)


def _commit(index: IndexStore, registry: Registry, batch: WriteOps, covered: int) -> None:
    registry.stage(batch)
    batch.put(Column.META, k.META_COVERED, k.encode_u64(covered))
    index.write(batch)


def roll_back(index: IndexStore, registry: Registry, end: int) -> int:
    """Drop index entries at or past log position ``end``; return how many went."""
    dropped = 0
    changed: dict[int, int] = {}  # qid -> its new next offset
    start = b""
    while True:
        chunk = list(index.scan(Column.REGISTRY, start, limit=1024))
        if not chunk:
            break
        batch = index.batch()
        for key, value in chunk:
            del value
            entry = registry.lookup(key, cache=False)
            assert entry is not None
            if b"\x00" + DLQ_PREFIX.encode() in key:
                cut = _cut_anywhere(index, entry, end, batch)
            else:
                cut = _cut_tail(index, entry, end, batch)
            if cut:
                dropped += cut
                changed[entry.qid] = entry.next_offset
                if entry.next_offset == entry.min_offset:
                    registry.move_first(entry, k.NO_POSITION)
                registry.join(entry)
        registry.stage(batch)
        index.write(batch)
        start = chunk[-1][0] + b"\x00"
    if changed:
        _clamp_groups(index, changed)
    batch = index.batch()
    batch.put(Column.META, k.META_COVERED, k.encode_u64(end))
    index.write(batch)
    return dropped


def _cut_tail(index: IndexStore, entry: QueueEntry, end: int, batch: WriteOps) -> int:
    cut = 0
    while entry.next_offset > entry.min_offset:
        key = k.offset_key(entry.qid, entry.next_offset - 1)
        raw = index.get(Column.INDEX, key)
        if raw is not None and k.decode_index(raw).position < end:
            break
        batch.delete(Column.INDEX, key)
        entry.next_offset -= 1
        cut += 1
    return cut


def _cut_anywhere(index: IndexStore, entry: QueueEntry, end: int, batch: WriteOps) -> int:
    lo, hi = k.queue_range(entry.qid)
    doomed = [
        key for key, raw in index.scan(Column.INDEX, lo, hi) if k.decode_index(raw).position >= end
    ]
    for key in doomed:
        batch.delete(Column.INDEX, key)
    return len(doomed)


def _clamp_groups(index: IndexStore, changed: dict[int, int]) -> None:
    """Pull committed offsets back to a cut queue's new end; drop its in-flight leases."""
    batch = index.batch()
    for key, value in index.scan(Column.OFFSETS, b""):
        qid, _ = k.group_of(key)
        if qid in changed and k.decode_u64(value) > changed[qid]:
            batch.put(Column.OFFSETS, key, k.encode_u64(changed[qid]))
    for key, _ in index.scan(Column.LEASES, b""):
        if k.group_of(key)[0] in changed:
            batch.delete(Column.LEASES, key)
    index.write(batch)
