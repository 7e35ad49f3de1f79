"""Consumer groups: committed offsets, leases, acks, redelivery and dead letters."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker import (
    Broker,
    CorruptIndex,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PublishRequest,
    QueueName,
    delivery,
)
from broker.index import keys as k
from broker.index.store import Column
from tests.integration.broker.conftest import FakeClock, OpenBroker

Q = "chatbot/s-1"


def fill(broker: Broker, count: int, queue_lite: str = "s-1") -> None:
    broker.publish_batch(
        [PublishRequest("chatbot", f"m{i}".encode(), (queue_lite,)) for i in range(count)]
    )


def test_committed_offsets(open_broker: OpenBroker) -> None:
    broker = open_broker()
    fill(broker, 5)
    assert broker.committed_offset("g", Q) is None
    broker.commit_offset("g", Q, 3)
    assert broker.committed_offset("g", Q) == 3
    assert broker.committed_offset("other", Q) is None
    broker.commit_offset("g", Q, 5)  # the end is a valid position
    with pytest.raises(InvalidArgument, match="offset 6 is past the end of chatbot/s-1"):
        broker.commit_offset("g", Q, 6)
    with pytest.raises(InvalidArgument, match="offset is -1"):
        broker.commit_offset("g", Q, -1)
    with pytest.raises(InvalidArgument, match="group 'bad group'"):
        broker.commit_offset("bad group", Q, 1)
    with pytest.raises(NotFound):
        broker.commit_offset("g", "chatbot/none", 0)


def test_a_lease_hands_out_the_next_batch_and_ack_moves_the_group_on(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker()
    fill(broker, 5)
    lease = broker.lease("g", Q, 3, lease_s=30.0)
    assert [(m.offset, m.attempt, m.body) for m in lease.messages] == [
        (0, 1, b"m0"),
        (1, 1, b"m1"),
        (2, 1, b"m2"),
    ]
    assert lease.deadline == clock.now + 30.0
    assert broker.lease("g", Q, 3, 30.0).messages == ()  # one batch in flight per queue
    assert [m.offset for m in broker.lease("other", Q, 10, 30.0).messages] == [0, 1, 2, 3, 4]
    assert broker.ack("g", Q, [0, 1]) is False  # 2 is still out: nothing new to lease
    # The settled front is behind the group; the batch (offset 2) is still in flight.
    assert broker.committed_offset("g", Q) == 2
    assert broker.lease("g", Q, 3, 30.0).messages == ()
    assert broker.ack("g", Q, [2]) is True
    assert broker.committed_offset("g", Q) == 3
    assert [m.offset for m in broker.lease("g", Q, 10, 30.0).messages] == [3, 4]
    broker.ack("g", Q, [3, 4, 1])  # 1 was settled long ago: ignored
    assert broker.committed_offset("g", Q) == 5
    assert broker.lease("g", Q, 10, 30.0).messages == ()
    fill(broker, 1)
    assert [m.offset for m in broker.lease("g", Q, 10, 30.0).messages] == [5]


def test_an_expired_lease_is_redelivered_with_the_next_attempt(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker()
    fill(broker, 3)
    broker.lease("g", Q, 3, 10.0)
    broker.ack("g", Q, [1])
    clock.advance(9.9)
    assert broker.lease("g", Q, 3, 10.0).messages == ()
    clock.advance(0.1)
    again = broker.lease("g", Q, 3, 10.0)
    assert [(m.offset, m.attempt) for m in again.messages] == [(0, 2), (2, 2)]
    broker.ack("g", Q, [0, 2])
    assert broker.committed_offset("g", Q) == 3


def test_nack_redelivers_at_once_once_nothing_else_is_leased(open_broker: OpenBroker) -> None:
    broker = open_broker()
    fill(broker, 3)
    broker.lease("g", Q, 3, 60.0)
    broker.nack("g", Q, [1])
    assert broker.lease("g", Q, 3, 60.0).messages == ()  # 0 and 2 still leased
    broker.ack("g", Q, [0])
    broker.nack("g", Q, [2])
    again = broker.lease("g", Q, 3, 60.0)
    assert [(m.offset, m.attempt) for m in again.messages] == [(1, 2), (2, 2)]
    with pytest.raises(FailedPrecondition, match="cannot ack offset 7"):
        broker.ack("g", Q, [7])


def test_acks_without_a_lease(open_broker: OpenBroker) -> None:
    broker = open_broker()
    fill(broker, 3)
    with pytest.raises(FailedPrecondition, match="group 'g' has no batch in flight"):
        broker.ack("g", Q, [0])
    broker.commit_offset("g", Q, 2)
    broker.ack("g", Q, [0, 1])  # below the committed offset: already settled
    with pytest.raises(FailedPrecondition, match="cannot nack offset 2"):
        broker.nack("g", Q, [2])


def test_extend_moves_the_deadline(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker()
    fill(broker, 1)
    broker.lease("g", Q, 1, 10.0)
    clock.advance(9)
    assert broker.extend("g", Q, 10.0) == clock.now + 10.0
    clock.advance(9)
    assert broker.lease("g", Q, 1, 10.0).messages == ()  # still leased
    clock.advance(1)
    assert broker.lease("g", Q, 1, 10.0).messages[0].attempt == 2
    broker.ack("g", Q, [0])
    with pytest.raises(FailedPrecondition, match="holds no lease"):
        broker.extend("g", Q, 10.0)


def test_lease_arguments_are_checked(open_broker: OpenBroker) -> None:
    broker = open_broker(max_read_messages=100)
    fill(broker, 1)
    with pytest.raises(InvalidArgument, match="max_messages is 0"):
        broker.lease("g", Q, 0, 1.0)
    with pytest.raises(InvalidArgument, match=r"lease_s is 0\.0"):
        broker.lease("g", Q, 1, 0.0)
    with pytest.raises(InvalidArgument, match="lease_s is inf"):
        broker.extend("g", Q, float("inf"))
    with pytest.raises(NotFound):
        broker.lease("g", "chatbot/none", 1, 1.0)


def test_after_max_attempts_a_message_goes_to_the_groups_dead_letter_queue(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker(max_attempts=3)
    broker.publish("chatbot", b"poison", lite_topics=["s-1"], namespace="acme")
    broker.publish("chatbot", b"fine", lite_topics=["s-1"], namespace="acme")
    queue = QueueName("acme", "chatbot", "s-1")
    for attempt in (1, 2, 3):
        lease = broker.lease("workers", queue, 1, 5.0)
        assert [(m.offset, m.attempt) for m in lease.messages] == [(0, attempt)]
        clock.advance(5)  # never acked
    lease = broker.lease("workers", queue, 1, 5.0)
    assert lease.dead_lettered == (0,)
    assert [(m.offset, m.attempt, m.body) for m in lease.messages] == [(1, 1, b"fine")]
    assert broker.committed_offset("workers", queue) == 1
    dlq = QueueName.dead_letter("acme", "workers")
    assert str(dlq) == "acme:%DLQ%workers"
    (dead,) = broker.read(dlq)
    assert (dead.body, dead.offset, dead.queue) == (b"poison", 0, dlq)
    assert broker.queue_info(dlq).ttl_s is None  # dead letters wait for retention


def test_dead_lettering_after_a_nack_in_the_last_attempt(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker(max_attempts=1)
    fill(broker, 2)
    broker.lease("g", Q, 2, 5.0)
    broker.ack("g", Q, [1])
    broker.nack("g", Q, [0])
    lease = broker.lease("g", Q, 2, 5.0)
    assert lease.dead_lettered == (0,)
    assert lease.messages == ()
    assert broker.committed_offset("g", Q) == 2
    assert [m.body for m in broker.read(QueueName.dead_letter("", "g"))] == [b"m0"]


def test_lease_state_and_attempts_survive_a_restart(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker()
    fill(broker, 4)
    broker.lease("g", Q, 2, 10.0)
    broker.ack("g", Q, [0])
    broker.close()
    broker = open_broker()
    assert broker.lease("g", Q, 2, 10.0).messages == ()  # still leased after the restart
    clock.advance(10)
    again = broker.lease("g", Q, 2, 10.0)
    assert [(m.offset, m.attempt) for m in again.messages] == [(1, 2)]
    broker.ack("g", Q, [1])
    broker.close()
    broker = open_broker()
    assert broker.committed_offset("g", Q) == 2
    assert [m.offset for m in broker.lease("g", Q, 5, 10.0).messages] == [2, 3]


def test_commit_offset_seeks_and_drops_the_lease(open_broker: OpenBroker) -> None:
    broker = open_broker()
    fill(broker, 6)
    broker.lease("g", Q, 2, 60.0)
    broker.commit_offset("g", Q, 4)
    assert [m.offset for m in broker.lease("g", Q, 5, 60.0).messages] == [4, 5]


def test_a_group_starts_at_the_first_retained_offset(open_broker: OpenBroker) -> None:
    broker = open_broker(segment_bytes=8192, retention_bytes=8192)
    for i in range(30):
        broker.publish("requests", bytes([i]) * 1000)
    broker.expire()
    first = broker.read("requests", 0, 1)[0].offset
    assert first > 0
    assert broker.lease("g", "requests", 1, 5.0).messages[0].offset == first


@pytest.mark.parametrize(
    "stored",
    [
        b"\x01\x02",  # too short for any form
        delivery._fresh(1.0, 0, 3, acked=0b1000),  # a range whose ack bits run past it (expired)
        delivery._HEAD.pack(1e12, 2) + delivery._ITEM.pack(0, 1, 9),  # an unknown slot, short
    ],
)
def test_a_damaged_in_flight_batch_is_corrupt_index_naming_group_and_queue(
    open_broker: OpenBroker, stored: bytes
) -> None:
    broker = open_broker()
    fill(broker, 5)
    assert broker.lease("g", Q, 3, lease_s=60).messages
    name = QueueName("", "chatbot", "s-1")
    batch = broker.index.batch()
    batch.put(Column.LEASES, k.group_key(broker.entry(name).qid, "g"), stored)
    broker.index.write(batch)
    calls: list[Callable[[], object]] = [
        lambda: broker.lease("g", Q, 3, lease_s=60),
        lambda: broker.ack("g", Q, [0]),
        lambda: broker.ack("g", Q, [0, 1, 2]),
        lambda: broker.nack("g", Q, [1]),
        lambda: broker.extend("g", Q, 30),
    ]
    for call in calls:
        with pytest.raises(CorruptIndex, match=r"group 'g' on chatbot/s-1 does not read back"):
            call()
    assert broker.lease("other", Q, 5, lease_s=60).messages  # other groups go on


def test_a_late_ack_settles_what_was_redelivered_and_the_second_ack_is_a_no_op(
    open_broker: OpenBroker,
) -> None:
    """Acks are by offset, not by lease (README): a consumer whose lease ran
    out may still ack what it processed, though the group handed it on."""
    broker = open_broker()
    fill(broker, 10)
    first = broker.lease("g", Q, 5, 10.0, now=100.0)
    again = broker.lease("g", Q, 5, 10.0, now=200.0)  # the first lease expired
    assert [m.attempt for m in again.messages] == [2] * 5
    assert broker.ack("g", Q, [m.offset for m in first.messages]) is True  # the late one
    assert broker.committed_offset("g", Q) == 5
    assert broker.ack("g", Q, [m.offset for m in again.messages]) is False  # nothing left to do
    assert [m.offset for m in broker.lease("g", Q, 5, 10.0, now=201.0).messages] == [5, 6, 7, 8, 9]
