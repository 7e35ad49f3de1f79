"""The queue registry: lite-topics created on use, expired after their TTL.

Cold queues live only in RocksDB (the registry column family); Python holds
a bounded LRU of hot entries plus the entries a batch is working on. The
cache is write-through: every change goes into the caller's batch, so an
entry can be dropped from memory at any time without losing anything.

A batch of work follows one pattern, under the broker's lock::

    entries = registry.resolve(keys, now)     # hot, else RocksDB, else created
    ... entries[key].next_offset += 1; .last_active = now; .first_position = low
    registry.stage(batch)                     # registry, expiry, refs, meta ops
    index.write(batch)

``resolve`` snapshots each entry and ``stage`` writes what the difference
implies, so the hot path changes plain attributes and calls nothing per entry.

``resolve`` parks every entry it returns in the batch's working set until
``stage``, so a name seen twice in one batch is one object even if the LRU
evicted it in between (two objects would hand out one offset twice).

Expiry keys are written only when a topic's deadline moves to a new
granularity bucket (one key per deadline per batch, listing the names), and
never deleted on use; :meth:`Registry.expire_chunk` checks each due name
against the registry and drops the stale ones.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import lru_cache

from broker.index import keys as k
from broker.index.store import Column, IndexStore, WriteOps

__all__ = ["QueueEntry", "Registry"]

# An expired topic with at most this many index entries has them deleted one
# by one; more, and one range tombstone is cheaper.
_POINT_DELETE_MAX = 64


class QueueEntry:
    """Mutable registry entry of one queue; encode() gives its registry value."""

    __slots__ = (
        "created",
        "first_position",
        "key",
        "last_active",
        "min_offset",
        "next_offset",
        "qid",
        "ttl",
    )

    def __init__(  # noqa: PLR0917 - positional on purpose: built per new topic on the hot path
        self,
        key: bytes,
        qid: int,
        next_offset: int,
        min_offset: int,
        first_position: int,
        created: float,
        last_active: float,
        ttl: float | None,
    ) -> None:
        self.key = key
        self.qid = qid
        self.next_offset = next_offset
        self.min_offset = min_offset
        self.first_position = first_position
        self.created = created
        self.last_active = last_active
        self.ttl = ttl

    def encode(self) -> bytes:
        return k.encode_registry(
            self.qid,
            self.next_offset,
            self.min_offset,
            self.first_position,
            self.created,
            self.last_active,
        )


class Registry:
    """Queue entries by name key; ids, counts and log references in the meta columns."""

    def __init__(
        self,
        index: IndexStore,
        ttl_for: Callable[[str], float | None],
        *,
        granularity_s: float,
        hot_capacity: int,
        ref_bucket: int,
    ) -> None:
        self._index = index
        self._granularity = granularity_s
        self._capacity = hot_capacity
        self._hot: OrderedDict[bytes, QueueEntry] = OrderedDict()
        self._working: dict[bytes, QueueEntry] = {}
        # (last_active, first_position) of each working entry when it joined;
        # None for a queue created in this batch.
        self._before: dict[bytes, tuple[float, int] | None] = {}
        self._ref_delta: dict[int, int] = {}
        self.subscribers: dict[bytes, int] = {}  # live subscriptions, in memory by design
        next_qid, queues, expiry_seq, bucket = index.get_many(
            Column.META, [k.META_NEXT_QID, k.META_QUEUES, k.META_EXPIRY_SEQ, k.META_REF_BUCKET]
        )
        if bucket is None:  # a new store: fix the width for its lifetime
            batch = index.batch()
            batch.put(Column.META, k.META_REF_BUCKET, k.encode_u64(ref_bucket))
            index.write(batch)
        self._bucket = ref_bucket if bucket is None else k.decode_u64(bucket)
        self._next_qid = k.decode_u64(next_qid) if next_qid else 1
        self._queues = k.decode_u64(queues) if queues else 0
        self._expiry_seq = k.decode_u64(expiry_seq) if expiry_seq else 0
        self._meta_dirty = False

        @lru_cache(maxsize=4096)
        def ttl_of_parent(prefix: bytes) -> float | None:
            return ttl_for(prefix.partition(b"\x00")[2].decode())

        self._ttl_of_parent = ttl_of_parent

    # ---------------------------------------------------------------- reads

    @property
    def queue_count(self) -> int:
        return self._queues

    @property
    def created(self) -> int:
        """Queues ever created here (ids are handed out in order from 1)."""
        return self._next_qid - 1

    @property
    def hot_count(self) -> int:
        return len(self._hot)

    def _ttl(self, key: bytes) -> float | None:
        prefix, slash, _ = key.partition(b"/")
        return self._ttl_of_parent(prefix) if slash else None  # parents and DLQs stay

    def _decode(self, key: bytes, value: bytes) -> QueueEntry:
        reg = k.decode_registry(value)
        return QueueEntry(
            key,
            reg.qid,
            reg.next_offset,
            reg.min_offset,
            reg.first_position,
            reg.created,
            reg.last_active,
            self._ttl(key),
        )

    def _remember(self, entry: QueueEntry) -> None:
        hot = self._hot
        hot[entry.key] = entry
        if len(hot) > self._capacity:
            hot.popitem(last=False)

    def lookup(self, key: bytes, *, cache: bool = True) -> QueueEntry | None:
        """The entry of ``key``, or None when no such queue exists."""
        entry = self._working.get(key) or self._hot.get(key)
        if entry is not None:
            if cache and key in self._hot:
                self._hot.move_to_end(key)
            return entry
        value = self._index.get(Column.REGISTRY, key)
        if value is None:
            return None
        entry = self._decode(key, value)
        if cache:
            self._remember(entry)
        return entry

    def resolve(self, keys: Iterable[bytes], now: float) -> dict[bytes, QueueEntry]:
        """Entries of ``keys`` (repeats allowed) by key, creating missing queues.

        Every one joins the working set. The caller may then change
        ``next_offset``, ``last_active`` and ``first_position`` directly:
        :meth:`stage` compares each entry with the snapshot taken here and
        writes what follows from the change.
        """
        working = self._working
        before = self._before
        hot = self._hot
        found: dict[bytes, QueueEntry] = {}
        missing: dict[bytes, None] = {}
        for key in keys:
            entry = working.get(key)
            if entry is not None:
                found[key] = entry
                continue
            entry = hot.get(key)
            if entry is None:
                missing[key] = None
            else:
                hot.move_to_end(key)
                working[key] = found[key] = entry
                before[key] = (entry.last_active, entry.first_position)
        if missing:
            wanted = list(missing)
            values = self._index.get_many(Column.REGISTRY, wanted)
            capacity = self._capacity
            ttl_of_parent = self._ttl_of_parent
            no_position = k.NO_POSITION
            created = 0
            for key, value in zip(wanted, values, strict=True):
                if value is None:  # a new queue (inline: a million of these is the benchmark)
                    prefix, slash, _ = key.partition(b"/")
                    ttl = ttl_of_parent(prefix) if slash else None
                    entry = QueueEntry(
                        key, self._next_qid + created, 0, 0, no_position, now, now, ttl
                    )
                    created += 1
                    before[key] = None
                else:
                    entry = self._decode(key, value)
                    before[key] = (entry.last_active, entry.first_position)
                hot[key] = entry
                if len(hot) > capacity:
                    hot.popitem(last=False)
                working[key] = found[key] = entry
            if created:
                self._next_qid += created
                self._queues += created
                self._meta_dirty = True
        return found

    def join(self, entry: QueueEntry) -> None:
        """Snapshot an entry into the working set before changing it outside :meth:`resolve`."""
        if entry.key not in self._working:
            self._working[entry.key] = entry
            self._before[entry.key] = (entry.last_active, entry.first_position)

    def touch(self, entry: QueueEntry, now: float, low: int | None) -> None:
        """Record activity at ``now`` that needs log bytes from ``low`` on."""
        self.join(entry)
        entry.last_active = max(entry.last_active, now)
        if low is not None and low < entry.first_position:
            entry.first_position = low

    def move_first(self, entry: QueueEntry, first: int) -> None:
        """Set the lowest log position the queue needs (retention took the ones before)."""
        self.join(entry)
        entry.first_position = first

    def _move_ref(self, old: int, new: int) -> None:
        delta = self._ref_delta
        if old != k.NO_POSITION:
            bucket = old // self._bucket
            delta[bucket] = delta.get(bucket, 0) - 1
        if new != k.NO_POSITION:
            bucket = new // self._bucket
            delta[bucket] = delta.get(bucket, 0) + 1

    def _deadline(self, entry: QueueEntry, last_active: float) -> int | None:
        if entry.ttl is None:
            return None
        return k.deadline_ms(last_active + entry.ttl, self._granularity)

    def stage(self, batch: WriteOps) -> None:
        """Write every working entry, and what its changes imply, into ``batch``.

        That is: the registry value; an expiry key when the TTL deadline moved
        to another granularity bucket (or the topic is new); reference counts
        when the first needed log position moved; the id and queue counters.
        """
        put = batch.put
        registry, expiry = Column.REGISTRY, Column.EXPIRY
        before = self._before
        granularity = self._granularity
        deadline_ms = k.deadline_ms
        deadlines: dict[float, int] = {}  # one batch shares few (active + ttl) values
        expiring: dict[int, list[bytes]] = {}  # deadline -> names: one key per deadline
        new_refs: dict[int, int] = {}
        pack = k.REGISTRY_VALUE.pack
        for key, entry in self._working.items():
            put(
                registry,
                key,
                pack(
                    entry.qid,
                    entry.next_offset,
                    entry.min_offset,
                    entry.first_position,
                    entry.created,
                    entry.last_active,
                ),
            )
            snapshot = before[key]
            ttl = entry.ttl
            if snapshot is None:
                first = entry.first_position
                if first != k.NO_POSITION:
                    bucket = first // self._bucket
                    new_refs[bucket] = new_refs.get(bucket, 0) + 1
                if ttl is not None:
                    at = entry.last_active + ttl
                    deadline = deadlines.get(at)
                    if deadline is None:
                        deadline = deadlines[at] = deadline_ms(at, granularity)
                    names = expiring.get(deadline)
                    if names is None:
                        expiring[deadline] = [key]
                    else:
                        names.append(key)
                continue
            old_active, old_first = snapshot
            if entry.first_position != old_first:
                self._move_ref(old_first, entry.first_position)
            if ttl is not None and entry.last_active != old_active:
                new = deadline_ms(entry.last_active + ttl, granularity)
                if new != deadline_ms(old_active + ttl, granularity):
                    expiring.setdefault(new, []).append(key)
        for deadline, names in expiring.items():
            put(expiry, k.expiry_key(deadline, self._expiry_seq), k.encode_names(names))
            self._expiry_seq += 1
            self._meta_dirty = True
        for bucket, count in new_refs.items():
            self._ref_delta[bucket] = self._ref_delta.get(bucket, 0) + count
        self._working.clear()
        before.clear()
        self._stage_refs(batch)
        self._stage_meta(batch)

    def _stage_refs(self, batch: WriteOps) -> None:
        changed = [(b, d) for b, d in self._ref_delta.items() if d]
        self._ref_delta.clear()
        if not changed:
            return
        ref_keys = [k.encode_u64(b) for b, _ in changed]
        counts = self._index.get_many(Column.REFS, ref_keys)
        for ref_key, (_, delta), count in zip(ref_keys, changed, counts, strict=True):
            total = (k.decode_u64(count) if count else 0) + delta
            assert total >= 0, "reference count below zero"
            if total:
                batch.put(Column.REFS, ref_key, k.encode_u64(total))
            else:
                batch.delete(Column.REFS, ref_key)

    def _stage_meta(self, batch: WriteOps) -> None:
        if self._meta_dirty:
            batch.put(Column.META, k.META_NEXT_QID, k.encode_u64(self._next_qid))
            batch.put(Column.META, k.META_QUEUES, k.encode_u64(self._queues))
            batch.put(Column.META, k.META_EXPIRY_SEQ, k.encode_u64(self._expiry_seq))
            self._meta_dirty = False

    def discard_working(self) -> None:
        """Forget a batch that will not be written (the broker then refuses to go on)."""
        self._working.clear()
        self._before.clear()
        self._ref_delta.clear()
        self._hot.clear()

    def rearm_all(self) -> int:
        """Rewrite every expiry key from the registry; returns the lite-topics armed.

        Expiry keys carry deadlines computed with the TTL in force when they
        were written. When the TTL settings change, the broker calls this on
        open so a shortened TTL takes effect now rather than at the old
        deadlines. It reads the whole registry: a settings change costs one
        pass, ordinary opens none.
        """
        batch = self._index.batch()
        batch.delete_range(Column.EXPIRY, b"", b"\xff" * 17)
        self._index.write(batch)
        armed = 0
        start = b""
        while True:
            chunk = list(self._index.scan(Column.REGISTRY, start, limit=4096))
            if not chunk:
                return armed
            groups: dict[int, list[bytes]] = {}
            for key, value in chunk:
                entry = self._decode(key, value)
                deadline = self._deadline(entry, entry.last_active)
                if deadline is not None:
                    groups.setdefault(deadline, []).append(key)
                    armed += 1
            batch = self._index.batch()
            for deadline, names in groups.items():
                batch.put(
                    Column.EXPIRY, k.expiry_key(deadline, self._expiry_seq), k.encode_names(names)
                )
                self._expiry_seq += 1
            self._meta_dirty = True
            self._stage_meta(batch)
            self._index.write(batch)
            start = chunk[-1][0] + b"\x00"

    def lowest_reference(self) -> int | None:
        """A log position at or below every live queue's first needed position."""
        for key, _ in self._index.scan(Column.REFS, b"", limit=1):
            return k.decode_u64(key) * self._bucket
        return None

    # --------------------------------------------------------------- expiry

    def remove(self, entry: QueueEntry, batch: WriteOps) -> None:
        """Delete a queue: its index entries, registry entry, group state, references."""
        lo, hi = k.queue_range(entry.qid)
        if entry.next_offset - entry.min_offset <= _POINT_DELETE_MAX:
            for offset in range(entry.min_offset, entry.next_offset):
                batch.delete(Column.INDEX, k.offset_key(entry.qid, offset))
        else:
            batch.delete_range(Column.INDEX, lo, hi)
        for column in (Column.OFFSETS, Column.LEASES):
            for key, _ in self._index.scan(column, lo, hi):
                batch.delete(column, key)
        batch.delete(Column.REGISTRY, entry.key)
        self._move_ref(entry.first_position, k.NO_POSITION)
        self._queues -= 1
        self._meta_dirty = True
        self._hot.pop(entry.key, None)

    def expire_chunk(
        self, now: float, limit: int, by_namespace: dict[str, int] | None = None
    ) -> tuple[int, bool]:
        """Remove due, idle, unsubscribed lite-topics named by about ``limit`` names.

        Returns (queues removed, whether more due keys may remain); with
        ``by_namespace``, adds each removal to its namespace's count there.
        """
        now_ms = math.floor(now * 1000)
        end = k.expiry_key(now_ms + 1, 0)
        due: list[bytes] = []
        names: list[bytes] = []
        for key, value in self._index.scan(Column.EXPIRY, b"", end):
            due.append(key)
            names += k.decode_names(value)
            if len(names) >= limit:
                break
        else:
            if not due:
                return 0, False
        more = len(names) >= limit
        entries = self._peek_many(names)
        batch = self._index.batch()
        for key in due:
            batch.delete(Column.EXPIRY, key)
        removed = 0
        rearm: dict[int, list[bytes]] = {}
        seen: set[bytes] = set()
        for name, entry in zip(names, entries, strict=True):
            if name in seen or entry is None or entry.ttl is None or self.subscribers.get(name):
                continue  # stale name, or a subscriber holds the topic (unsubscribe re-arms)
            seen.add(name)
            deadline = self._deadline(entry, entry.last_active)
            assert deadline is not None
            if deadline > now_ms:  # used since: its newer key may be gone, so re-arm
                rearm.setdefault(deadline, []).append(name)
                continue
            self.remove(entry, batch)
            removed += 1
            if by_namespace is not None:
                namespace = name.partition(b"\x00")[0].decode()
                by_namespace[namespace] = by_namespace.get(namespace, 0) + 1
        for deadline, group in rearm.items():
            batch.put(
                Column.EXPIRY, k.expiry_key(deadline, self._expiry_seq), k.encode_names(group)
            )
            self._expiry_seq += 1
            self._meta_dirty = True
        self._stage_refs(batch)
        self._stage_meta(batch)
        self._index.write(batch)
        return removed, more

    def _peek_many(self, names: Iterable[bytes]) -> list[QueueEntry | None]:
        """Entries without disturbing the LRU (an expiry sweep touches cold topics)."""
        names = list(names)
        result: list[QueueEntry | None] = [self._hot.get(n) for n in names]
        cold = [i for i, entry in enumerate(result) if entry is None]
        values = self._index.get_many(Column.REGISTRY, [names[i] for i in cold])
        for i, value in zip(cold, values, strict=True):
            if value is not None:
                result[i] = self._decode(names[i], value)
        return result
