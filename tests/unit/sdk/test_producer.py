"""Producer lanes: one call in flight per producer id, sequences that only rise."""

from __future__ import annotations

import pytest

from tidegate.errors import InvalidArgument
from tidegate.producer import Lanes


def test_concurrent_calls_get_distinct_producer_ids() -> None:
    lanes = Lanes("app", 1)
    a, b = lanes.take(), lanes.take()
    assert (a.producer_id, b.producer_id) == ("app", "app.1")
    lanes.give(a, 10)
    c = lanes.take()
    assert c is a
    assert c.next_sequence == 11
    assert lanes.lanes == 2


def test_sequence_moves_past_what_was_sent_even_after_a_failure() -> None:
    lanes = Lanes("app", 5)
    lane = lanes.take()
    lanes.give(lane, 3)  # e.g. the call failed after the server stored some
    assert lanes.take().next_sequence == 8


def test_a_client_without_a_name_gets_a_fresh_id_from_one() -> None:
    lanes = Lanes.for_client(None, None, new_id=lambda: "sdk-abc", wall_us=lambda: 99)
    lane = lanes.take()
    assert (lane.producer_id, lane.next_sequence) == ("sdk-abc", 1)


def test_a_named_producer_starts_at_the_wall_clock_so_restarts_keep_rising() -> None:
    lanes = Lanes.for_client("billing", None, new_id=lambda: "x", wall_us=lambda: 1_700_000)
    assert lanes.take().next_sequence == 1_700_000
    pinned = Lanes.for_client("billing", 42, new_id=lambda: "x", wall_us=lambda: 1_700_000)
    assert pinned.take().next_sequence == 42


@pytest.mark.parametrize("name", ["", "has space", "x" * 57, "slash/no"])
def test_bad_producer_ids_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="producer_id"):
        Lanes(name, 1)
