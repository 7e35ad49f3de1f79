"""The event-driven pull engine: ready sets, credits, order of service, cost."""

from __future__ import annotations

import pytest

from broker.subscriptions import Engine, Pull

A, B, C = b"t\x00c/a", b"t\x00c/b", b"t\x00c/c"


def plain(engine: Engine, cid: int = 1) -> Engine:
    engine.open(cid, grouped=False)
    return engine


def test_a_new_subscription_is_ready_only_when_it_has_something_to_read() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=3, end=3)
    engine.add(1, B, cursor=0, end=2)
    assert engine.ready_count(1) == 1
    engine.grant(1, 10)
    assert engine.take(1, max_messages=10) == [Pull(B, 0, 2)]


def test_an_append_wakes_only_subscribers_with_credits() -> None:
    engine = Engine()
    plain(engine, 1)
    plain(engine, 2)
    engine.add(1, A, cursor=0, end=0)
    engine.add(2, A, cursor=0, end=0)
    engine.grant(1, 5)
    assert engine.appended({A: 1, C: 7}) == [1]
    assert engine.ready_count(2) == 1  # ready, waiting for credits
    assert engine.grant(2, 1)


def test_take_reserves_credits_and_delivered_refunds_what_was_not_used() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=10)
    engine.grant(1, 4)
    (pull,) = engine.take(1, max_messages=100)
    assert pull == Pull(A, 0, 4)
    assert engine.credits(1) == 0
    engine.delivered(1, pull, sent=3, next_cursor=3)
    assert engine.credits(1) == 1
    assert engine.take(1, max_messages=100) == [Pull(A, 3, 1)]


def test_ready_queues_are_served_round_robin() -> None:
    engine = plain(Engine())
    for key in (A, B, C):
        engine.add(1, key, cursor=0, end=100)
    engine.grant(1, 1000)
    first = engine.take(1, max_messages=10, max_queues=1)
    assert [p.key for p in first] == [A]
    engine.delivered(1, first[0], sent=10, next_cursor=10)
    assert engine.take(1, max_messages=10, max_queues=1) == [Pull(B, 0, 10)]
    assert engine.take(1, max_messages=10, max_queues=1) == [Pull(C, 0, 10)]
    assert engine.take(1, max_messages=10, max_queues=1) == [Pull(A, 10, 10)]


def test_budget_spreads_over_queues_in_ready_order() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=2)
    engine.add(1, B, cursor=5, end=9)
    engine.grant(1, 100)
    assert engine.take(1, max_messages=5) == [Pull(A, 0, 2), Pull(B, 5, 3)]


def test_a_caught_up_queue_leaves_the_ready_set_until_the_next_append() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=2)
    engine.grant(1, 100)
    (pull,) = engine.take(1, max_messages=100)
    engine.delivered(1, pull, sent=2, next_cursor=2)
    assert engine.ready_count(1) == 0
    assert engine.appended({A: 3}) == [1]
    assert engine.take(1, max_messages=100) == [Pull(A, 2, 1)]


def test_an_append_seen_before_the_subscription_counts() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=0)
    engine.appended({A: 5})
    engine.remove(1, A)
    engine.add(1, A, cursor=0, end=1)  # the read of the end raced the append
    engine.grant(1, 100)
    assert engine.take(1, max_messages=100) == [Pull(A, 0, 1)]


def test_poll_cost_follows_ready_data_not_subscriptions() -> None:
    engine = plain(Engine())
    for i in range(100_000):
        engine.add(1, b"t\x00c/%d" % i, cursor=0, end=0)
    engine.grant(1, 1000)
    assert engine.ready_count(1) == 0
    assert engine.appended({b"t\x00c/77": 1, b"t\x00c/5": 2}) == [1, 1]
    pulls = engine.take(1, max_messages=1000)
    assert pulls == [Pull(b"t\x00c/77", 0, 1), Pull(b"t\x00c/5", 0, 2)]


def test_removing_a_subscription_drops_it_from_the_ready_set_and_the_index() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=3)
    assert engine.remove(1, A)
    assert not engine.remove(1, A)
    assert engine.appended({A: 4}) == []
    assert list(engine.subscribers_of(A)) == []


def test_a_pull_on_a_removed_or_restarted_subscription_changes_nothing() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=10)
    engine.grant(1, 5)
    (pull,) = engine.take(1, max_messages=5)
    engine.add(1, A, cursor=8, end=10)  # moved while the pull ran
    engine.delivered(1, pull, sent=5, next_cursor=5)
    engine.grant(1, 5)
    assert engine.take(1, max_messages=5) == [Pull(A, 8, 2)]


def test_close_returns_the_subscriptions_and_forgets_the_consumer() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=0)
    engine.add(1, B, cursor=0, end=0)
    assert sorted(engine.close(1)) == [A, B]
    assert engine.appended({A: 1}) == []
    assert engine.close(1) == []


def test_grouped_queues_wait_for_a_change_after_an_empty_lease() -> None:
    engine = Engine()
    engine.open(1, grouped=True)
    engine.add(1, A, cursor=None, end=0)
    engine.grant(1, 10)
    (pull,) = engine.take(1, max_messages=10)
    assert pull == Pull(A, None, 10)
    engine.delivered(1, pull, sent=0, next_cursor=None)  # nothing there
    assert engine.ready_count(1) == 0
    assert engine.changed(A) == [1]
    (pull,) = engine.take(1, max_messages=10)
    engine.delivered(1, pull, sent=4, next_cursor=None)
    assert engine.credits(1) == 6
    assert engine.ready_count(1) == 1  # maybe more once the batch settles


def test_lease_deadlines_make_their_queues_ready_when_due() -> None:
    engine = Engine()
    engine.open(1, grouped=True)
    engine.add(1, A, cursor=None, end=0)
    engine.grant(1, 10)
    (pull,) = engine.take(1, max_messages=10)
    engine.delivered(1, pull, sent=0, next_cursor=None)
    engine.leased(A, 105.0)
    engine.leased(B, 110.0)
    assert engine.next_deadline() == 105.0
    assert engine.due(104.9) == []
    assert engine.due(105.0) == [1]
    assert engine.next_deadline() == 110.0


def test_plain_and_grouped_subscriptions_do_not_mix() -> None:
    engine = plain(Engine())
    with pytest.raises(ValueError, match="grouped"):
        engine.add(1, A, cursor=None, end=0)
    with pytest.raises(ValueError, match="open already"):
        engine.open(1, grouped=True)
    with pytest.raises(ValueError, match="credits"):
        engine.grant(1, -1)


def test_credits_are_capped() -> None:
    engine = Engine(max_credits=10)
    plain(engine)
    engine.grant(1, 100)
    assert engine.credits(1) == 10


def test_a_share_lets_a_lone_ready_queue_take_every_credit() -> None:
    engine = Engine()
    engine.open(1, grouped=True)
    engine.add(1, A, cursor=None, end=5000)
    engine.grant(1, 1000)
    assert engine.take(1, max_messages=1000, share=100) == [Pull(A, None, 1000)]


def test_a_share_splits_the_credits_over_many_ready_queues() -> None:
    engine = Engine()
    engine.open(1, grouped=True)
    for key in (A, B, C):
        engine.add(1, key, cursor=None, end=5000)
    engine.grant(1, 900)
    # 900 credits over 3 ready queues: 300 each, not all to the first.
    assert engine.take(1, max_messages=1000, share=100) == [
        Pull(A, None, 300),
        Pull(B, None, 300),
        Pull(C, None, 300),
    ]


def test_a_share_is_what_each_of_many_ready_queues_may_take_at_least() -> None:
    engine = Engine()
    engine.open(1, grouped=True)
    keys = [b"t\x00c/%d" % i for i in range(12)]
    for key in keys:
        engine.add(1, key, cursor=None, end=5000)
    engine.grant(1, 1000)
    # 1000 / 12 is less than the share: ten queues get a share each, the
    # other two wait for the next round.
    assert engine.take(1, max_messages=1000, share=100) == [Pull(k, None, 100) for k in keys[:10]]


def test_a_share_bounds_plain_reads_too() -> None:
    engine = plain(Engine())
    engine.add(1, A, cursor=0, end=500)
    engine.add(1, B, cursor=0, end=50)
    engine.grant(1, 1000)
    assert engine.take(1, max_messages=1000, share=100) == [Pull(A, 0, 500), Pull(B, 0, 50)]


def test_most_caps_what_one_queue_takes() -> None:
    engine = Engine()
    engine.open(1, grouped=True)
    engine.add(1, A, cursor=None, end=5000)
    engine.add(1, B, cursor=None, end=5000)
    engine.grant(1, 1000)
    assert engine.take(1, max_messages=1000, share=100, most=300) == [
        Pull(A, None, 300),
        Pull(B, None, 300),
    ]
    engine.grant(1, 1000)
    engine.changed(A)
    assert engine.take(1, max_messages=1000, most=1) == [Pull(A, None, 1)]
