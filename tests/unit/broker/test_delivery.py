"""The lease state machine of one (group, queue): pure, driven with explicit times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import delivery
from broker.delivery import Pending, Slot
from broker.errors import FailedPrecondition


def slots(state: delivery.BatchState) -> dict[int, tuple[Slot, int]]:
    return {p.offset: (p.slot, p.attempt) for p in state.items}


def test_a_new_batch_is_leased_once_and_busy_until_its_deadline() -> None:
    state = delivery.new_batch([3, 4, 5], deadline=10.0)
    assert (state.start, state.end) == (3, 6)
    assert slots(state) == {3: (Slot.LEASED, 1), 4: (Slot.LEASED, 1), 5: (Slot.LEASED, 1)}
    assert state.busy(9.99)
    assert not state.busy(10.0)
    assert not state.settled
    with pytest.raises(ValueError, match="at least one"):
        delivery.new_batch([], 1.0)


def test_acking_everything_settles_the_batch() -> None:
    state = delivery.ack(delivery.new_batch([0, 1], 10.0), [1])
    assert not state.settled
    assert state.busy(5.0)  # message 0 is still leased
    state = delivery.ack(state, [0])
    assert state.settled
    assert not state.busy(5.0)


def test_acks_are_idempotent_and_ignore_settled_offsets_before_the_batch() -> None:
    state = delivery.new_batch([7, 8], 10.0)
    state = delivery.ack(state, [7, 7, 2])
    assert slots(state)[7] == (Slot.ACKED, 1)
    assert delivery.ack(state, [7]) == state


def test_offsets_after_the_batch_start_that_it_does_not_hold_are_refused() -> None:
    state = delivery.new_batch([7, 9], 10.0)  # 8 was lost to retention, say
    with pytest.raises(FailedPrecondition, match=r"cannot ack offset 8: .* \[7, 9\]"):
        delivery.ack(state, [8])
    with pytest.raises(FailedPrecondition, match="cannot nack offset 12"):
        delivery.nack(state, [12])


def test_an_expired_lease_releases_its_unacked_messages_for_redelivery() -> None:
    state = delivery.ack(delivery.new_batch([0, 1, 2], 10.0), [1])
    assert delivery.release_expired(state, 9.0) == state
    state = delivery.release_expired(state, 10.0)
    assert slots(state) == {0: (Slot.RELEASED, 1), 1: (Slot.ACKED, 1), 2: (Slot.RELEASED, 1)}
    state, again, dead = delivery.redeliver(state, 20.0, max_messages=10, max_attempts=5)
    assert [(p.offset, p.attempt) for p in again] == [(0, 2), (2, 2)]
    assert dead == []
    assert state.deadline == 20.0
    assert state.busy(19.0)


def test_a_late_ack_of_a_released_message_still_counts() -> None:
    state = delivery.release_expired(delivery.new_batch([0], 10.0), 11.0)
    assert delivery.ack(state, [0]).settled


def test_nack_releases_only_what_it_names_and_keeps_acked_ones() -> None:
    state = delivery.ack(delivery.new_batch([0, 1, 2], 10.0), [0])
    state = delivery.nack(state, [0, 1])
    assert slots(state) == {0: (Slot.ACKED, 1), 1: (Slot.RELEASED, 1), 2: (Slot.LEASED, 1)}
    assert state.busy(5.0)  # 2 still leased: the nacked one waits (one batch in flight)
    state = delivery.nack(state, [2, 2])
    assert not state.busy(5.0)


def test_redelivery_respects_max_messages_in_order() -> None:
    state = delivery.nack(delivery.new_batch([0, 1, 2], 10.0), [0, 1, 2])
    state, again, _ = delivery.redeliver(state, 20.0, max_messages=2, max_attempts=9)
    assert [p.offset for p in again] == [0, 1]
    assert slots(state)[2] == (Slot.RELEASED, 1)


def test_messages_go_to_the_dead_letter_queue_after_max_attempts() -> None:
    state = delivery.new_batch([0, 1], deadline=1.0)  # attempt 1
    for attempt, now in ((2, 10.0), (3, 20.0)):
        state = delivery.release_expired(state, now)
        state, again, dead = delivery.redeliver(state, now + 1.0, 10, max_attempts=3)
        assert [(p.offset, p.attempt) for p in again] == [(0, attempt), (1, attempt)]
        assert dead == []
    state = delivery.ack(state, [1])
    state = delivery.release_expired(state, 30.0)  # 0 failed its third and last attempt
    state, again, dead = delivery.redeliver(state, 31.0, 10, max_attempts=3)
    assert again == []
    assert dead == [0]
    assert state.settled


def test_extend_needs_a_running_lease() -> None:
    state = delivery.new_batch([0], 10.0)
    assert delivery.extend(state, 30.0, now=5.0).deadline == 30.0
    with pytest.raises(FailedPrecondition, match="no running lease"):
        delivery.extend(state, 30.0, now=10.0)
    with pytest.raises(FailedPrecondition):
        delivery.extend(delivery.ack(state, [0]), 30.0, now=5.0)


pendings = st.lists(
    st.tuples(st.integers(0, 2**40), st.integers(1, 0xFFFF), st.sampled_from(list(Slot))),
    min_size=1,
    max_size=50,
    unique_by=lambda t: t[0],
)


@given(st.floats(allow_nan=False), pendings)
def test_state_round_trip(deadline: float, items: list[tuple[int, int, Slot]]) -> None:
    state = delivery.BatchState(deadline, tuple(Pending(o, a, s) for o, a, s in sorted(items)))
    assert delivery.decode(delivery.encode(state)) == state


def test_truncated_state_is_refused() -> None:
    data = delivery.encode(delivery.new_batch([1, 3], 3.0))  # the items form
    with pytest.raises(ValueError, match="header says 2"):
        delivery.decode(data[:-11])
    fresh = delivery.encode(delivery.new_batch([1, 2], 3.0))  # the range form
    with pytest.raises(ValueError, match="header says"):
        delivery.decode(fresh[:-1])
