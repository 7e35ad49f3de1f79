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
def test_ack_prefix_agrees_with_the_full_path(
    raw: list[tuple[int, int, Slot]], first: int, now: float
) -> None:
    state = BatchState(9.0, tuple(Pending(o, a, s) for o, a, s in sorted(raw)))
    named = {p.offset for p in state.items[:first]}
    front = delivery.ack_prefix(delivery.encode(state), named)
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


def test_ack_prefix_declines_what_is_not_the_front() -> None:
    fresh = delivery.new_batch([1, 2, 3], 3.0)  # stored in the range form
    again = BatchState(3.0, (*fresh.items[:2], Pending(3, 2, Slot.LEASED)))  # the items form
    for state in (fresh, again):
        data = delivery.encode(state)
        assert delivery.ack_prefix(data, {2}) is None  # not the first
        assert delivery.ack_prefix(data, {1, 3}) is None  # not a run from the front
        assert delivery.ack_prefix(data, {0, 1}) is None  # 0 is not in the batch
        assert delivery.ack_prefix(data, {1, 2, 3}) is None  # all of it: settled_by_ack's
        assert delivery.ack_prefix(data[:-1], {1}) is None  # truncated
        front = delivery.ack_prefix(data, {1})
        assert front is not None
        assert (front.position, front.leased) == (2, True)
        assert delivery.decode(front.rest) == BatchState(3.0, state.items[1:])


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
