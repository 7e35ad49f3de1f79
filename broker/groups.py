"""Consumer groups on the store: committed offsets, leases, acks, dead letters.

The transitions are :mod:`broker.delivery`'s; this module keeps their state
in the index (offsets and leases column families, keyed by queue id and
group) and moves dead messages. A dead-lettered message is not copied: the
group's dead-letter queue (``%DLQ%<group>``, a parent queue in the namespace
of the queue the message died in) gets an index entry pointing at the same
log record. Dead-letter queues never expire; retention ends them.

Under ``fsync=always`` these writes are synced: an ack or a commit that
returned is on disk, except an ack or nack made with ``sync=False`` (the
server's Subscribe acks), which is in the OS and reaches the disk with the
next :meth:`~broker.store.Broker.sync_index`. Under ``interval``, or before
that sync, a machine crash may undo recent ones, which only means
redelivery (at-least-once).

Group state (committed offsets, leases, dead-letter entries) lives only in
the index, not in the log: an index rebuilt from the log has the messages
and queues back but starts every group afresh at its queue's first offset.
"""

from __future__ import annotations

import math
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from broker import delivery
from broker.errors import CorruptIndex, FailedPrecondition, InvalidArgument
from broker.index import keys as k
from broker.index.store import Column, IndexStore, WriteOps
from broker.reading import Reader
from broker.settings import BrokerSettings
from broker.topics import QueueEntry, Registry
from broker.types import Lease, QueueName, check_group

__all__ = ["GroupHost", "Groups"]


class GroupHost(Protocol):
    """What consumer groups need of the broker (its lock, state and reads)."""

    settings: BrokerSettings

    @property
    def lock(self) -> threading.RLock: ...
    @property
    def index(self) -> IndexStore: ...
    @property
    def registry(self) -> Registry: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def log_start(self) -> int: ...
    @property
    def sync_control(self) -> bool: ...
    def check(self) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def entry(self, name: QueueName) -> QueueEntry: ...
    @property
    def reader(self) -> Reader: ...


T = TypeVar("T")


def _stored(read: Callable[[], T], group: str, name: QueueName) -> T:
    """``read()`` of a group's stored batch state; CorruptIndex where it does
    not read back (the delivery module raises ValueError or struct.error)."""
    try:
        return read()
    except (ValueError, struct.error) as exc:
        raise CorruptIndex(
            f"the in-flight batch of group {group!r} on {name} does not read back from "
            f"the index ({exc}); the index is damaged"
        ) from exc


class Groups:
    """Consumer-group operations of one broker."""

    def __init__(self, host: GroupHost) -> None:
        self._host = host

    def _write(self, batch: WriteOps, *, sync: bool = True) -> None:
        host = self._host
        try:
            host.registry.stage(batch)
            host.index.write(batch, sync=sync and host.sync_control)
        except BaseException as exc:
            host.fail(exc)
            raise

    def _keep(
        self, key: bytes, *, position: int | None, batch_state: bytes | None, sync: bool = True
    ) -> None:
        """Write a group's new position on a queue (None: unchanged) and its
        in-flight batch (None: settled, removed) in one index write."""
        batch = self._host.index.batch()
        if position is not None:
            batch.put(Column.OFFSETS, key, k.encode_u64(position))
        if batch_state is None:
            batch.delete(Column.LEASES, key)
        else:
            batch.put(Column.LEASES, key, batch_state)
        self._write(batch, sync=sync)

    def _committed(self, qid: int, group: str) -> int | None:
        raw = self._host.index.get(Column.OFFSETS, k.group_key(qid, group))
        return None if raw is None else k.decode_u64(raw)

    def _state(self, qid: int, group: str, name: QueueName) -> delivery.BatchState | None:
        raw = self._host.index.get(Column.LEASES, k.group_key(qid, group))
        return None if raw is None else _stored(lambda: delivery.decode(raw), group, name)

    # -------------------------------------------------------------- offsets

    def commit(self, group: str, name: QueueName, offset: int) -> None:
        check_group(group)
        if offset < 0:
            raise InvalidArgument(f"offset is {offset}; it must be >= 0")
        host = self._host
        with host.lock:
            host.check()
            entry = host.entry(name)
            if offset > entry.next_offset:
                raise InvalidArgument(
                    f"offset {offset} is past the end of {name} (next offset {entry.next_offset})"
                )
            self._keep(k.group_key(entry.qid, group), position=offset, batch_state=None)

    def committed(self, group: str, name: QueueName) -> int | None:
        check_group(group)
        host = self._host
        with host.lock:
            host.check()
            return self._committed(host.entry(name).qid, group)

    # --------------------------------------------------------------- leases

    def lease(
        self, group: str, name: QueueName, max_messages: int, lease_s: float, now: float | None
    ) -> Lease:
        check_group(group)
        host = self._host
        if not 1 <= max_messages <= host.settings.max_read_messages:
            raise InvalidArgument(
                f"max_messages is {max_messages}; it must be in "
                f"[1, {host.settings.max_read_messages}]"
            )
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise InvalidArgument(f"lease_s is {lease_s}; it must be a finite number > 0")
        with host.lock:
            host.check()
            try:
                return self._lease(group, name, max_messages, lease_s, now)
            except BaseException:
                # Whatever this call staged in the registry was not written:
                # forget it (and the cache it touched) rather than let the
                # next write carry it without its index entries.
                host.registry.discard_working()
                raise

    def _lease(
        self, group: str, name: QueueName, max_messages: int, lease_s: float, now: float | None
    ) -> Lease:
        host = self._host
        now = host.clock() if now is None else now
        entry = host.entry(name)
        key = k.group_key(entry.qid, group)
        raw = host.index.get(Column.LEASES, key)
        if raw is not None:
            out_until = _stored(lambda: delivery.busy_raw(raw, now), group, name)
            if out_until is not None:  # the batch is still out: nothing to hand out
                return Lease(group, name, (), out_until)
        committed = self._committed(entry.qid, group)
        position = entry.min_offset if committed is None else committed
        batch = host.index.batch()
        deadline = now + lease_s
        dead: list[int] = []
        if raw is not None:
            state = delivery.release_expired(
                _stored(lambda: delivery.decode(raw), group, name), now
            )
            while True:
                state, again, died = delivery.redeliver(
                    state, deadline, max_messages, host.settings.max_attempts
                )
                if died:
                    dead += self._dead_letter(
                        name, entry, group=group, offsets=died, now=now, batch=batch
                    )
                if not again:
                    break
                found = host.reader.messages_at(
                    name, entry, [p.offset for p in again], host.log_start
                )
                kept = {m.offset for m in found}
                lost = [p.offset for p in again if p.offset not in kept]
                if lost:  # retention took them: nothing left to deliver
                    state = delivery.ack(state, lost)
                if found:
                    batch.put(Column.LEASES, key, delivery.encode(state))
                    self._write(batch)
                    attempts = {p.offset: p.attempt for p in again}
                    messages = tuple(m._replace(attempt=attempts[m.offset]) for m in found)
                    return Lease(group, name, messages, deadline, tuple(dead))
            assert state.settled, "a batch with nothing leased or released is settled"
            position = max(position, state.end)
            batch.put(Column.OFFSETS, key, k.encode_u64(position))
            batch.delete(Column.LEASES, key)
        found = host.reader.read(name, entry, position, max_messages, batch, attempt=1)
        if found:
            fresh = delivery.encode_new([m.offset for m in found], deadline)
            batch.put(Column.LEASES, key, fresh)
        self._write(batch)
        messages = tuple(found)
        return Lease(group, name, messages, deadline if found else now, tuple(dead))

    def _dead_letter(
        self,
        name: QueueName,
        entry: QueueEntry,
        *,
        group: str,
        offsets: list[int],
        now: float,
        batch: WriteOps,
    ) -> list[int]:
        """Point the group's DLQ at the records of ``offsets``; return those moved."""
        host = self._host
        dlq = QueueName.dead_letter(name.namespace, group)
        target = host.registry.resolve([dlq.key], now)[dlq.key]
        raws = host.index.get_many(Column.INDEX, [k.offset_key(entry.qid, o) for o in offsets])
        log_start = host.log_start
        moved: list[int] = []
        for offset, raw in zip(offsets, raws, strict=True):
            if raw is None or k.decode_index(raw).lowest < log_start:
                continue  # lost to retention: nothing to keep
            batch.put(Column.INDEX, k.offset_key(target.qid, target.next_offset), raw)
            target.next_offset += 1
            host.registry.touch(target, now, k.decode_index(raw).lowest)
            moved.append(offset)
        return moved

    def _settle(
        self,
        group: str,
        name: QueueName,
        offsets: Iterable[int],
        verb: str,
        change: Callable[[delivery.BatchState, list[int]], delivery.BatchState],
        *,
        sync: bool,
    ) -> bool:
        check_group(group)
        named = set(offsets)
        host = self._host
        with host.lock:
            host.check()
            entry = host.entry(name)
            key = k.group_key(entry.qid, group)
            raw = host.index.get(Column.LEASES, key)
            if raw is not None and verb == "ack":
                end = _stored(lambda: delivery.settled_by_ack(raw, named), group, name)
                if end is not None:  # the common ack: the whole batch, settled
                    position = max(self._committed(entry.qid, group) or 0, end)
                    self._keep(key, position=position, batch_state=None, sync=sync)
                    return True
                front = _stored(lambda: delivery.ack_fast(raw, named), group, name)
                if front is not None:  # acks of a fresh batch, or of the front of one
                    position = max(self._committed(entry.qid, group) or 0, front.position)
                    self._keep(key, position=position, batch_state=front.rest, sync=sync)
                    return not front.leased
            wanted = sorted(named)
            state = None if raw is None else _stored(lambda: delivery.decode(raw), group, name)
            if state is None:
                committed = self._committed(entry.qid, group)
                strangers = [o for o in wanted if committed is None or o >= committed]
                if strangers:
                    raise FailedPrecondition(
                        f"cannot {verb} offset {strangers[0]} of {name}: group {group!r} "
                        "has no batch in flight there"
                    )
                return False
            state = change(state, wanted)
            committed = self._committed(entry.qid, group) or 0
            if state.settled:
                self._keep(key, position=max(committed, state.end), batch_state=None, sync=sync)
                return True
            state, position = delivery.drop_settled_front(state)
            moved = position if position > committed else None
            self._keep(key, position=moved, batch_state=delivery.encode(state), sync=sync)
            return not state.leased()

    def ack(self, group: str, name: QueueName, offsets: Iterable[int], *, sync: bool) -> bool:
        """Settle ``offsets``; True if a lease may now hand out more (the batch
        settled, or nothing of it is leased any more)."""
        return self._settle(group, name, offsets, "ack", delivery.ack, sync=sync)

    def nack(self, group: str, name: QueueName, offsets: Iterable[int], *, sync: bool) -> bool:
        """Release ``offsets``; True as :meth:`ack`."""
        return self._settle(group, name, offsets, "nack", delivery.nack, sync=sync)

    def extend(self, group: str, name: QueueName, lease_s: float, now: float | None) -> float:
        check_group(group)
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise InvalidArgument(f"lease_s is {lease_s}; it must be a finite number > 0")
        host = self._host
        with host.lock:
            host.check()
            now = host.clock() if now is None else now
            entry = host.entry(name)
            state = self._state(entry.qid, group, name)
            if state is None:
                raise FailedPrecondition(f"group {group!r} holds no lease on {name} to extend")
            state = delivery.extend(state, now + lease_s, now)
            batch = host.index.batch()
            batch.put(Column.LEASES, k.group_key(entry.qid, group), delivery.encode(state))
            self._write(batch)
            return state.deadline
