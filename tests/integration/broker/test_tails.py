"""Reads of a subscribed queue's newest messages come from memory (broker/tail.py)
and are exactly what the log gives: same offsets, bodies, positions, timestamps,
properties, attempts; chunked bodies, unsubscribing and groups included."""

from __future__ import annotations

from broker import Broker, PublishRequest, QueueName
from broker.types import Message
from tests.integration.broker.conftest import OpenBroker

S1 = QueueName("", "chat", "s-1")
S2 = QueueName("", "chat", "s-2")


def _from_log(broker: Broker, queue: QueueName, start: int, count: int) -> list[Message]:
    reader = broker._reader  # the same read with the tails switched off
    tails, reader.tails = reader.tails, None
    try:
        return broker.read(queue, start, count)
    finally:
        reader.tails = tails


def _hits(broker: Broker) -> int:
    return broker._tails.hits


def test_a_subscribed_queue_reads_its_newest_messages_from_memory(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker()
    broker.subscribe(S1)
    broker.publish_batch(
        [PublishRequest("chat", f"m{i}".encode(), ("s-1",)) for i in range(10)]
        + [PublishRequest("chat", b"both", ("s-1", "s-2"), {"kind": "x"})]
        + [PublishRequest("chat", b"p", ("s-1",), {"model": "tiny"}) for _ in range(3)]
    )
    before = _hits(broker)
    for start, count in ((0, 14), (3, 4), (10, 4), (13, 1)):
        assert broker.read(S1, start, count) == _from_log(broker, S1, start, count)
    assert _hits(broker) == before + 4
    assert dict(broker.read(S1, 10, 1)[0].properties) == {"kind": "x"}
    # Not subscribed: no tail, the log answers.
    assert [m.body for m in broker.read(S2)] == [b"both"]
    assert _hits(broker) == before + 5  # the four above and the properties read


def test_a_chunked_body_is_read_from_the_log_and_the_tail_resumes_after_it(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker(chunk_bytes=4096)
    broker.subscribe(S1)
    broker.publish("chat", b"a", lite_topics=["s-1"])
    broker.publish("chat", b"x" * 10_000, lite_topics=["s-1"])  # stored in chunks
    broker.publish("chat", b"c", lite_topics=["s-1"])
    everything = broker.read(S1, 0, 3)
    assert everything == _from_log(broker, S1, 0, 3)
    assert everything[1].chunked
    before = _hits(broker)
    assert broker.read(S1, 2, 1) == _from_log(broker, S1, 2, 1)
    assert _hits(broker) == before + 1


def test_the_tail_goes_with_the_last_subscriber_and_serves_group_leases(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker()
    broker.subscribe(S1)
    broker.subscribe(S1)
    broker.publish_batch([PublishRequest("chat", b"m", ("s-1",)) for _ in range(5)])
    lease = broker.lease("g", S1, 5, 30.0)
    assert [(m.offset, m.attempt) for m in lease.messages] == [(i, 1) for i in range(5)]
    assert list(lease.messages) == [m._replace(attempt=1) for m in _from_log(broker, S1, 0, 5)]
    broker.unsubscribe(S1)
    assert len(broker._tails) == 1  # one subscriber left
    broker.unsubscribe(S1)
    assert len(broker._tails) == 0
    before = _hits(broker)
    assert len(broker.read(S1, 0, 5)) == 5
    assert _hits(broker) == before
