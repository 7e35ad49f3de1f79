"""Lease and ack state of one (consumer group, queue): pure values and transitions.

Order per queue is kept by allowing ONE in-flight batch per (group, queue):
the next batch starts only once every message of the current one is settled
(acked, or moved to the dead-letter queue). Inside a batch each message is

    LEASED ──ack──▶ ACKED
      │  ▲
  nack│  │redeliver (attempt + 1), when nothing of the batch is LEASED any more
  or  ▼  │
  expiry RELEASED ──attempt >= max_attempts──▶ dead-lettered (counts as ACKED)

A partial nack releases those messages, but they go out again only once the
rest of the batch is acked, nacked or expired: redelivering them earlier
would put two batches of one queue in flight and break order.

Settled messages at the front of a batch are dropped from it (the group's
committed offset moves up to the first one left, :func:`ack_fast`), and a
fresh batch keeps its acks as a bitmap: a batch taken in several frames and
acked frame by frame, or acked message by message in any order, costs per
ack what the ack settles.

The broker persists :class:`BatchState` (``encode``/``decode``) in the leases
column family, so attempts survive a restart; the group's committed offset
moves to the batch's end when the batch settles. Nothing here reads a clock:
``now`` is an argument.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

from broker.errors import FailedPrecondition

__all__ = [
    "BatchState",
    "FastAck",
    "Pending",
    "Slot",
    "ack",
    "ack_fast",
    "busy_raw",
    "decode",
    "drop_settled_front",
    "encode",
    "encode_new",
    "extend",
    "nack",
    "new_batch",
    "redeliver",
    "release_expired",
    "settled_by_ack",
]


class Slot(IntEnum):
    LEASED = 0
    ACKED = 1
    RELEASED = 2


@dataclass(frozen=True, slots=True)
class Pending:
    """One message of the in-flight batch."""

    offset: int
    attempt: int  # deliveries so far (1 after the first)
    slot: Slot


@dataclass(frozen=True, slots=True)
class BatchState:
    """The in-flight batch: its messages in offset order and the lease deadline."""

    deadline: float
    items: tuple[Pending, ...]

    @property
    def start(self) -> int:
        return self.items[0].offset

    @property
    def end(self) -> int:
        """The offset after the batch's last message: where the group goes next."""
        return self.items[-1].offset + 1

    @property
    def settled(self) -> bool:
        return all(p.slot is Slot.ACKED for p in self.items)

    def busy(self, now: float) -> bool:
        """True while some message is leased and the lease has not run out."""
        return now < self.deadline and any(p.slot is Slot.LEASED for p in self.items)

    def leased(self) -> list[Pending]:
        return [p for p in self.items if p.slot is Slot.LEASED]


def new_batch(offsets: Sequence[int], deadline: float) -> BatchState:
    """A first delivery of ``offsets`` (ascending), leased until ``deadline``."""
    if not offsets:
        raise ValueError("a batch needs at least one offset")
    return BatchState(deadline, tuple(Pending(o, 1, Slot.LEASED) for o in offsets))


def release_expired(state: BatchState, now: float) -> BatchState:
    """Leased messages whose lease ran out become redeliverable."""
    if now < state.deadline or not any(p.slot is Slot.LEASED for p in state.items):
        return state
    return replace(
        state,
        items=tuple(
            Pending(p.offset, p.attempt, Slot.RELEASED) if p.slot is Slot.LEASED else p
            for p in state.items
        ),
    )


def _settle(state: BatchState, offsets: Iterable[int], to: Slot, verb: str) -> BatchState:
    wanted = set(offsets)
    known = {p.offset for p in state.items}
    strangers = sorted(o for o in wanted if o >= state.start and o not in known)
    if strangers:
        raise FailedPrecondition(
            f"cannot {verb} offset {strangers[0]}: it is not in the group's in-flight batch "
            f"(offsets {sorted(known)})"
        )
    # Built directly, not with dataclasses.replace: this runs once per message
    # of every acked batch, and replace() costs four times a constructor.
    items = [
        Pending(p.offset, p.attempt, to)
        if p.offset in wanted and p.slot is not Slot.ACKED and p.slot is not to
        else p
        for p in state.items
    ]
    return BatchState(state.deadline, tuple(items))


def ack(state: BatchState, offsets: Iterable[int]) -> BatchState:
    """Acknowledge ``offsets``. Offsets before the batch are settled already and
    ignored (acks are idempotent); a late ack of a released message still counts.
    """
    return _settle(state, offsets, Slot.ACKED, "ack")


def drop_settled_front(state: BatchState) -> tuple[BatchState, int]:
    """``state`` without its acked messages at the front, and the offset of the
    first one left (the group's position). ``state`` must not be settled."""
    items = state.items
    front = 0
    while items[front].slot is Slot.ACKED:
        front += 1
    if front:
        state = BatchState(state.deadline, items[front:])
    return state, state.start


def nack(state: BatchState, offsets: Iterable[int]) -> BatchState:
    """Give ``offsets`` back for redelivery (see the module docstring for when)."""
    return _settle(state, offsets, Slot.RELEASED, "nack")


def extend(state: BatchState, deadline: float, now: float) -> BatchState:
    """Move the lease deadline; only a lease still running can be extended."""
    if not state.busy(now):
        raise FailedPrecondition(
            "no running lease to extend: the batch is settled, released or its lease expired"
        )
    return replace(state, deadline=deadline)


def redeliver(
    state: BatchState, deadline: float, max_messages: int, max_attempts: int
) -> tuple[BatchState, list[Pending], list[int]]:
    """Lease released messages again, oldest first.

    Returns the new state, the messages to deliver (attempt already counted)
    and the offsets that reached ``max_attempts`` and go to the dead-letter
    queue instead (they count as acked from now on).
    """
    items: list[Pending] = []
    delivered: list[Pending] = []
    dead: list[int] = []
    for p in state.items:
        if p.slot is not Slot.RELEASED:
            items.append(p)
        elif p.attempt >= max_attempts:
            dead.append(p.offset)
            items.append(Pending(p.offset, p.attempt, Slot.ACKED))
        elif len(delivered) < max_messages:
            again = Pending(p.offset, p.attempt + 1, Slot.LEASED)
            delivered.append(again)
            items.append(again)
        else:
            items.append(p)
    return BatchState(deadline, tuple(items)), delivered, dead


# Two encodings. Items: a head (deadline, count) and one (offset, attempt,
# slot) per message. Fresh: a batch of consecutive offsets, every message
# delivered once (attempt 1) and leased or acked, as (deadline, RANGE_MARK,
# first offset, count) and, once some are acked, a bitmap of them (bit i:
# offset first + i): 22 bytes plus one per 8 messages, a length and a mark no
# items form has. A lease writes the fresh form and its acks keep it, in any
# order, each costing what it acks; a nack or an expiry (attempts and
# releases to keep) turns it into the items form.
_HEAD = struct.Struct(">dH")
_ITEM = struct.Struct(">QHB")
_RANGE = struct.Struct(">dHQI")
_RANGE_MARK = 0xFFFF  # a count no items form holds (a batch is at most 10,000 here)
_SLOTS = tuple(Slot)  # by value: Slot(n) is a slow call per message


def _as_fresh(data: bytes) -> tuple[float, int, int, int] | None:
    """(deadline, first offset, count, acked bits) of a fresh-form batch; None
    for the items form."""
    if len(data) < _RANGE.size:
        return None
    deadline, mark, first, count = _RANGE.unpack_from(data)
    if mark != _RANGE_MARK:
        return None
    extra = len(data) - _RANGE.size
    if extra == 0:
        return deadline, first, count, 0
    if extra != (count + 7) // 8:
        return None
    return deadline, first, count, int.from_bytes(data[_RANGE.size :], "little")


def _fresh(deadline: float, first: int, count: int, acked: int = 0) -> bytes:
    head = _RANGE.pack(deadline, _RANGE_MARK, first, count)
    return head + acked.to_bytes((count + 7) // 8, "little") if acked else head


def _consecutive(offsets: Sequence[int]) -> bool:
    return 0 < len(offsets) < 2**32 and offsets[-1] - offsets[0] == len(offsets) - 1


def encode(state: BatchState) -> bytes:
    items = state.items
    if (
        items
        and len(items) < 2**32
        and items[-1].offset - items[0].offset == len(items) - 1
        and all(p.attempt == 1 and p.slot is not Slot.RELEASED for p in items)
    ):
        acked = sum(1 << i for i, p in enumerate(items) if p.slot is Slot.ACKED)
        return _fresh(state.deadline, items[0].offset, len(items), acked)
    parts = [_HEAD.pack(state.deadline, len(items))]
    parts += [_ITEM.pack(p.offset, min(p.attempt, 0xFFFF), p.slot) for p in items]
    return b"".join(parts)


def encode_new(offsets: Sequence[int], deadline: float) -> bytes:
    """``encode(new_batch(offsets, deadline))`` without building the state: every
    lease of fresh messages stores one."""
    if not offsets:
        raise ValueError("a batch needs at least one offset")
    if _consecutive(offsets):
        return _fresh(deadline, offsets[0], len(offsets))
    pack = _ITEM.pack
    leased = Slot.LEASED.value
    return b"".join([_HEAD.pack(deadline, len(offsets)), *[pack(o, 1, leased) for o in offsets]])


def _bits(offsets: set[int], first: int, end: int) -> int | None:
    """The bitmap of ``offsets`` in a fresh batch [first, end); those below it are
    settled already and left out; None if one lies past it (a stranger)."""
    bits = 0
    for offset in offsets:
        if offset >= end:
            return None
        if offset >= first:
            bits |= 1 << (offset - first)
    return bits


def settled_by_ack(data: bytes, offsets: set[int]) -> int | None:
    """The batch's end if acking ``offsets`` settles the batch ``data`` encodes.

    The common ack (a consumer acks the batch it got) needs neither the
    decoded state nor a new one: ``ack(decode(data), offsets).settled`` is
    true and the group moves to the batch's end. None when the ack leaves
    some of it unsettled, or for what only the full path can tell (offsets
    outside an items-form batch, odd data): use the full path then.
    """
    fresh = _as_fresh(data)
    if fresh is not None:
        _, first, count, acked = fresh
        if (
            not acked
            and len(offsets) == count
            and min(offsets) == first == max(offsets) - count + 1
        ):
            return first + count  # count distinct offsets from first on: exactly the batch
        if len(offsets) + acked.bit_count() < count:
            return None  # too few to settle it (the common ack of a frame of a larger batch)
        named = _bits(offsets, first, first + count)
        if count and named is not None and acked | named == (1 << count) - 1:
            return first + count
        return None
    deadline_and_count = _HEAD.unpack_from(data, 0)
    count = deadline_and_count[1]
    body = memoryview(data)[_HEAD.size :]
    if count == 0 or len(offsets) != count or len(body) != count * _ITEM.size:
        return None
    last = -1
    for offset, _, slot in _ITEM.iter_unpack(body):
        if offset not in offsets or slot >= len(_SLOTS):
            return None
        last = offset
    return last + 1


def busy_raw(data: bytes, now: float) -> float | None:
    """The lease deadline if the batch ``data`` encodes is busy at ``now`` (see
    :meth:`BatchState.busy`), else None; without decoding the batch.

    A lease call on a queue whose batch is still out (the consumer woke for
    something else) answers from this. The first leased message is usually
    the batch's first unsettled one, so this reads a few items, not all.
    """
    fresh = _as_fresh(data)
    if fresh is not None:  # leased: every message not acked
        deadline, _, count, acked = fresh
        return deadline if now < deadline and acked != (1 << count) - 1 else None
    deadline, count = _HEAD.unpack_from(data, 0)
    if not now < deadline or len(data) != _HEAD.size + count * _ITEM.size:
        return None
    leased = Slot.LEASED.value
    for _, _, slot in _ITEM.iter_unpack(memoryview(data)[_HEAD.size :]):
        if slot == leased:
            return float(deadline)
    return None


@dataclass(frozen=True, slots=True)
class FastAck:
    """What an ack left of a batch: where the group is now (the first message
    not settled) and the rest of the batch, encoded."""

    position: int
    rest: bytes
    leased: bool  # something of the rest is still leased (a lease would find nothing new)


def ack_fast(data: bytes, offsets: set[int]) -> FastAck | None:
    """Ack ``offsets`` without decoding the batch ``data`` encodes, where that is
    possible and some of the batch stays unsettled; None otherwise (use
    :func:`ack`): in a fresh batch any of its messages, in the items form
    the first ``len(offsets)`` ones.

    Settled messages at the front of a batch need no state: they are dropped
    and the group's position moves up to the first one left, so an ack costs
    what it acks, not the size of the batch (a batch taken in frames is
    acked frame by frame; workers finish its messages in any order).
    """
    fresh = _as_fresh(data)
    if fresh is not None:
        deadline, first, count, acked = fresh
        wanted = len(offsets)
        if not acked and 0 < wanted < count and min(offsets) == first == max(offsets) - wanted + 1:
            # the front, as a frame's ack is: the rest is a range again
            return FastAck(first + wanted, _fresh(deadline, first + wanted, count - wanted), True)
        named = _bits(offsets, first, first + count)
        if named is None or acked >> count:
            return None
        acked |= named
        if acked == (1 << count) - 1:
            return None  # settled: settled_by_ack's
        front = (~acked & (acked + 1)).bit_length() - 1  # how many are acked from the front
        rest = _fresh(deadline, first + front, count - front, acked >> front)
        return FastAck(first + front, rest, True)
    wanted = len(offsets)
    deadline, count = _HEAD.unpack_from(data, 0)
    size = _ITEM.size
    if not 0 < wanted < count or len(data) != _HEAD.size + count * size:
        return None
    body = memoryview(data)[_HEAD.size :]
    for offset, _, slot in _ITEM.iter_unpack(body[: wanted * size]):
        if offset not in offsets or slot >= len(_SLOTS):
            return None
    acked_slot = Slot.ACKED.value
    dropped = wanted
    position = -1
    leased = False
    for offset, _, slot in _ITEM.iter_unpack(body[wanted * size :]):
        if slot == acked_slot and position < 0:
            dropped += 1
            continue
        if position < 0:
            position = offset
        if slot == Slot.LEASED.value:
            leased = True
            break
    if position < 0:
        return None  # nothing left unsettled: the whole-batch ack settles it
    rest = _HEAD.pack(deadline, count - dropped) + bytes(body[dropped * size :])
    return FastAck(position, rest, leased)


def decode(data: bytes) -> BatchState:
    fresh = _as_fresh(data)
    if fresh is not None:
        deadline, first, count, acked = fresh
        if not count or acked >> count:
            raise ValueError(f"lease state holds an odd range ({count} messages, bits {acked:#x})")
        either = (Slot.LEASED, Slot.ACKED)
        return BatchState(
            deadline,
            tuple(Pending(first + i, 1, either[acked >> i & 1]) for i in range(count)),
        )
    deadline, count = _HEAD.unpack_from(data, 0)
    slots = _SLOTS
    try:
        items = tuple(
            Pending(offset, attempt, slots[slot])
            for offset, attempt, slot in _ITEM.iter_unpack(data[_HEAD.size :])
        )
    except IndexError:
        raise ValueError("lease state holds an unknown slot value") from None
    if len(items) != count:
        raise ValueError(f"lease state lists {len(items)} messages, its header says {count}")
    return BatchState(deadline, items)
