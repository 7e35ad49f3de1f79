"""Settling a batch: the constructor-built transitions against a plain reference."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import delivery
from broker.delivery import BatchState, Pending, Slot

items = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 5), st.sampled_from(list(Slot))),
    min_size=1,
    max_size=12,
    unique_by=lambda t: t[0],
)


def _reference(state: BatchState, offsets: set[int], to: Slot) -> BatchState:
    """The rule in words: a message named and not acked moves to ``to``; released stays
    released on a nack; everything else is kept."""
    out = []
    for p in state.items:
        if p.offset in offsets and p.slot is not Slot.ACKED:
            out.append(
                p
                if to is Slot.RELEASED and p.slot is Slot.RELEASED
                else Pending(p.offset, p.attempt, to)
            )
        else:
            out.append(p)
    return BatchState(state.deadline, tuple(out))


@given(items, st.data())
def test_ack_and_nack_follow_the_rule(
    raw: list[tuple[int, int, Slot]], data: st.DataObject
) -> None:
    state = BatchState(9.0, tuple(Pending(o, a, s) for o, a, s in sorted(raw)))
    named = set(data.draw(st.lists(st.sampled_from([p.offset for p in state.items]))))
    named |= (
        set(data.draw(st.lists(st.integers(0, state.start - 1), max_size=2)))
        if state.start
        else set()
    )
    assert delivery.ack(state, named) == _reference(state, named, Slot.ACKED)
    assert delivery.nack(state, named) == _reference(state, named, Slot.RELEASED)


def test_acking_every_message_settles_the_batch() -> None:
    state = delivery.new_batch(list(range(100, 200)), 5.0)
    done = delivery.ack(state, range(100, 200))
    assert done.settled
    assert done.end == 200
    assert done.deadline == 5.0


def test_an_unknown_slot_value_is_refused() -> None:
    data = delivery.encode(BatchState(3.0, (Pending(1, 2, Slot.LEASED),)))  # the items form
    damaged = data[:-1] + struct.pack(">B", 7)
    with pytest.raises(ValueError, match="unknown slot"):
        delivery.decode(damaged)


offset_lists = st.lists(st.integers(0, 2**40), min_size=1, max_size=60, unique=True).map(sorted)


@given(offset_lists, st.floats(allow_nan=False))
def test_encode_new_is_encode_of_new_batch(offsets: list[int], deadline: float) -> None:
    assert delivery.encode_new(offsets, deadline) == delivery.encode(
        delivery.new_batch(offsets, deadline)
    )


def test_encode_new_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="at least one offset"):
        delivery.encode_new([], 1.0)


@given(items, st.data())
def test_settled_by_ack_agrees_with_the_full_path(
    raw: list[tuple[int, int, Slot]], data: st.DataObject
) -> None:
    state = BatchState(9.0, tuple(Pending(o, a, s) for o, a, s in sorted(raw)))
    own = [p.offset for p in state.items]
    named = set(data.draw(st.lists(st.sampled_from([*own, *range(41, 45)]))))
    end = delivery.settled_by_ack(delivery.encode(state), named)
    if end is not None:  # the short path answered: it must be what the full one says
        settled = delivery.ack(state, named)
        assert settled.settled
        assert end == settled.end
    if named == set(own):
        assert end == state.end  # acking exactly the batch always takes the short path


def test_settled_by_ack_declines_odd_data() -> None:
    data = delivery.encode(delivery.new_batch([1, 3], 3.0))  # not a range: the items form
    assert delivery.settled_by_ack(data[:-1], {1, 2}) is None
    assert delivery.settled_by_ack(data[:-1] + b"\x07", {1, 2}) is None  # unknown slot
    assert delivery.settled_by_ack(data, {1}) is None
    assert delivery.settled_by_ack(data, {1, 2, 3}) is None
    assert delivery.settled_by_ack(data, {1, 2}) is None


@given(items, st.integers(1, 12), st.floats(0, 20))
def test_ack_fast_agrees_with_the_full_path(
    raw: list[tuple[int, int, Slot]], first: int, now: float
) -> None:
    state = BatchState(9.0, tuple(Pending(o, a, s) for o, a, s in sorted(raw)))
    named = {p.offset for p in state.items[:first]}
    front = delivery.ack_fast(delivery.encode(state), named)
    full = delivery.ack(state, named)
    if front is None:
        # declined only where the short path does not apply: all of it named,
        # or nothing left unsettled after the ack
        assert first >= len(state.items) or full.settled
        return
    assert not full.settled
    kept, position = delivery.drop_settled_front(full)
    assert delivery.decode(front.rest) == kept
    assert front.position == position
    assert front.leased == bool(kept.leased())
    assert delivery.busy_raw(front.rest, now) == (kept.deadline if kept.busy(now) else None)


def test_ack_fast_takes_only_the_front_of_an_items_form_batch() -> None:
    fresh = delivery.new_batch([1, 2, 3], 3.0)
    again = BatchState(3.0, (*fresh.items[:2], Pending(3, 2, Slot.LEASED)))  # the items form
    data = delivery.encode(again)
    assert delivery.ack_fast(data, {2}) is None  # not the first
    assert delivery.ack_fast(data, {1, 3}) is None  # not a run from the front
    assert delivery.ack_fast(data, {0, 1}) is None  # 0 is not in the batch
    assert delivery.ack_fast(data, {1, 2, 3}) is None  # all of it: settled_by_ack's
    assert delivery.ack_fast(data[:-1], {1}) is None  # truncated
    front = delivery.ack_fast(data, {1})
    assert front is not None
    assert (front.position, front.leased) == (2, True)
    assert delivery.decode(front.rest) == BatchState(3.0, again.items[1:])


def test_ack_fast_takes_any_message_of_a_fresh_batch() -> None:
    data = delivery.encode(delivery.new_batch([1, 2, 3, 4], 3.0))
    assert delivery.ack_fast(data, {5}) is None  # past the batch: the full path names it
    middle = delivery.ack_fast(data, {3, 0})  # 0 is before the batch: settled, ignored
    assert middle is not None
    assert middle.position == 1  # the front is still out
    assert delivery.decode(middle.rest) == delivery.ack(delivery.new_batch([1, 2, 3, 4], 3.0), [3])
    assert len(middle.rest) == 23  # the range and one byte of bitmap
    front = delivery.ack_fast(middle.rest, {1, 2})  # 1, 2 and the 3 acked before: dropped
    assert front is not None
    assert (front.position, len(front.rest)) == (4, 22)
    assert delivery.decode(front.rest) == delivery.new_batch([4], 3.0)
    assert delivery.settled_by_ack(front.rest, {4}) == 5
    assert delivery.settled_by_ack(middle.rest, {1, 2, 4}) == 5  # the rest, in one ack


@given(
    st.integers(0, 2**40),
    st.integers(1, 300),
    st.lists(st.lists(st.integers(-3, 305), max_size=12), min_size=1, max_size=40),
)
def test_acks_of_a_fresh_batch_in_any_order_agree_with_the_full_path(
    first: int, count: int, acks: list[list[int]]
) -> None:
    """A sequence of acks, each settled as the broker does (whole batch, fast
    path, else the full path), leaves what the full path alone leaves."""
    data = delivery.encode_new(list(range(first, first + count)), 9.0)
    reference = delivery.new_batch(list(range(first, first + count)), 9.0)
    position = first
    for ack in acks:
        named = {first + o for o in ack}
        strangers = [o for o in named if o >= first + count]
        full = None if strangers else delivery.ack(reference, sorted(named))
        end = delivery.settled_by_ack(data, named)
        fast = delivery.ack_fast(data, named)
        if strangers:
            assert end is None
            assert fast is None
            continue
        assert full is not None
        if full.settled:
            assert end == first + count
            return
        assert end is None
        assert fast is not None
        kept, at = delivery.drop_settled_front(full)
        assert delivery.decode(fast.rest) == kept
        assert fast.position == at >= position
        position, data, reference = at, fast.rest, kept
        assert len(data) <= 22 + (count + 7) // 8


@given(st.integers(0, 2**40), st.integers(1, 10_000), st.floats(allow_nan=False))
def test_a_fresh_run_is_stored_in_22_bytes(first: int, count: int, deadline: float) -> None:
    offsets = list(range(first, first + count))
    data = delivery.encode_new(offsets, deadline)
    assert len(data) == 22
    assert data == delivery.encode(delivery.new_batch(offsets, deadline))
    assert delivery.decode(data) == delivery.new_batch(offsets, deadline)
    assert delivery.settled_by_ack(data, set(offsets)) == first + count
    assert delivery.settled_by_ack(data, set(offsets[1:])) is None


@given(items, st.floats(0, 20))
def test_busy_raw_is_busy(raw: list[tuple[int, int, Slot]], now: float) -> None:
    state = BatchState(9.0, tuple(Pending(o, a, s) for o, a, s in sorted(raw)))
    expected = state.deadline if state.busy(now) else None
    assert delivery.busy_raw(delivery.encode(state), now) == expected


@given(st.integers(0, 2**40), st.lists(st.booleans(), min_size=1, max_size=300))
def test_a_fresh_batch_with_acks_round_trips(first: int, acked: list[bool]) -> None:
    slots = [Slot.ACKED if a else Slot.LEASED for a in acked]
    state = BatchState(4.5, tuple(Pending(first + i, 1, s) for i, s in enumerate(slots)))
    data = delivery.encode(state)
    assert len(data) == (22 + (len(acked) + 7) // 8 if any(acked) else 22)
    assert delivery.decode(data) == state


def test_a_bitmap_past_its_batch_is_refused() -> None:
    head = delivery.encode(delivery.new_batch([1, 2, 3], 3.0))
    assert delivery.decode(head + b"\x02").items[1].slot is Slot.ACKED
    with pytest.raises(ValueError, match="odd range"):
        delivery.decode(head + b"\xff")  # bits for messages 4 to 8 of a batch of 3
    assert delivery.ack_fast(head + b"\xff", {1}) is None
