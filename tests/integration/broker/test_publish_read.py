"""Publishing and reading: multi-dispatch, contiguous offsets, reads from anywhere."""

from __future__ import annotations

import threading

import pytest

from broker import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PublishRequest,
    QueueName,
    StoreClosed,
)
from tests.integration.broker.conftest import FakeClock, OpenBroker


def test_one_message_is_indexed_into_every_lite_topic_it_names(open_broker: OpenBroker) -> None:
    broker = open_broker()
    result = broker.publish("chatbot", b"hello", lite_topics=["s-1", "s-2", "s-3"])
    assert result.offsets == (0, 0, 0)
    again = broker.publish("chatbot", b"again", lite_topics=["s-2"])
    assert again.offsets == (1,)
    for lite in ("s-1", "s-2", "s-3"):
        first = broker.read(QueueName("", "chatbot", lite))[0]
        assert (first.body, first.offset, first.position) == (b"hello", 0, result.position)
    assert [m.body for m in broker.read("chatbot/s-2")] == [b"hello", b"again"]
    with pytest.raises(NotFound, match="queue chatbot does not exist"):
        broker.read("chatbot")  # lite-topics given: the parent's own queue is not used
    stats = broker.stats()
    assert stats.published_messages == 2  # written once to the log, dispatched thrice
    assert stats.queues == 3


def test_without_lite_topics_a_message_goes_to_the_parent_queue(open_broker: OpenBroker) -> None:
    broker = open_broker()
    assert broker.publish("requests", b"a").offsets == (0,)
    assert broker.publish("requests", b"b").offsets == (1,)
    assert [m.body for m in broker.read("requests")] == [b"a", b"b"]


def test_offsets_are_contiguous_and_readable_from_any_offset(open_broker: OpenBroker) -> None:
    broker = open_broker()
    results = broker.publish_batch(
        [PublishRequest("chatbot", f"m{i}".encode(), ("s-1",)) for i in range(50)]
    )
    assert [r.offsets for r in results] == [(i,) for i in range(50)]
    assert len({r.position for r in results}) == 50
    for start in (0, 1, 17, 49):
        got = broker.read("chatbot/s-1", start, 5)
        assert [m.offset for m in got] == list(range(start, min(start + 5, 50)))
        assert [m.body for m in got] == [f"m{o}".encode() for o in range(start, min(start + 5, 50))]
    assert broker.read("chatbot/s-1", 50) == []
    assert broker.read("chatbot/s-1", 10_000) == []


def test_long_and_short_reads_agree_and_step_over_missing_entries(
    open_broker: OpenBroker,
) -> None:
    """A read of many consecutive offsets walks the log from the first one's
    record (or is one index range scan where the records lie apart), a short
    one is a multi-get (broker/reading.py): all give the same messages. The
    index reads step over a hole (an entry gone from the index)."""
    broker = open_broker()
    broker.publish_batch([PublishRequest("chatbot", f"m{i}".encode(), ("s-1",)) for i in range(40)])
    long_read = broker.read("chatbot/s-1", 3, 30)
    short_reads = [m for start in range(3, 33, 3) for m in broker.read("chatbot/s-1", start, 3)]
    assert [(m.offset, m.body) for m in long_read] == [(m.offset, m.body) for m in short_reads]
    assert [m.offset for m in long_read] == list(range(3, 33))
    name = QueueName("", "chatbot", "s-1")
    entry = broker.entry(name)
    assert broker.reader.messages_at(name, entry, range(3, 33), broker.log_start) == long_read
    # Knock three entries out of the middle of the queue's index.
    from broker.index import keys as k
    from broker.index.store import Column

    batch = broker.index.batch()
    for offset in (10, 11, 20):
        batch.delete(Column.INDEX, k.OFFSET_KEY.pack(entry.qid, offset))
    broker.index.write(batch)
    expected = [o for o in range(3, 33) if o not in (10, 11, 20)]
    scanned = broker.reader.messages_at(name, entry, range(3, 33), broker.log_start)
    assert [m.offset for m in scanned] == expected
    assert [m.body for m in scanned] == [f"m{o}".encode() for o in expected]
    got = [m for start in range(3, 33, 3) for m in broker.read("chatbot/s-1", start, 3)]
    assert [m.offset for m in got] == expected


def test_messages_carry_timestamp_properties_and_size(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker()
    result = broker.publish("t", b"12345", properties={"trace": "abc", "ü": "ö"})
    (message,) = broker.read("t")
    assert message.timestamp == clock.now == result.timestamp
    assert message.properties == {"trace": "abc", "ü": "ö"}
    assert message.size == 5
    assert not message.chunked
    assert message.attempt == 0
    assert message.queue == QueueName("", "t")


def test_namespaces_keep_tenants_apart(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish("chatbot", b"acme", lite_topics=["s-1"], namespace="acme")
    broker.publish("chatbot", b"other", lite_topics=["s-1"], namespace="other")
    assert [m.body for m in broker.read(QueueName("acme", "chatbot", "s-1"))] == [b"acme"]
    assert [m.body for m in broker.read(QueueName("other", "chatbot", "s-1"))] == [b"other"]
    with pytest.raises(NotFound):
        broker.read("chatbot/s-1")


def test_a_bad_request_in_a_batch_writes_nothing(open_broker: OpenBroker) -> None:
    broker = open_broker()
    with pytest.raises(InvalidArgument, match="lite_topic 'bad name'"):
        broker.publish_batch(
            [PublishRequest("t", b"ok", ("s-1",)), PublishRequest("t", b"no", ("bad name",))]
        )
    with pytest.raises(NotFound):
        broker.read("t/s-1")
    assert broker.stats().log_end == 0
    assert broker.publish_batch([]) == []


def test_read_window_is_validated(open_broker: OpenBroker) -> None:
    broker = open_broker(max_read_messages=10)
    broker.publish("t", b"x")
    with pytest.raises(InvalidArgument, match="from_offset is -1"):
        broker.read("t", -1)
    with pytest.raises(InvalidArgument, match=r"max_messages is 11; it must be in \[1, 10\]"):
        broker.read("t", 0, 11)
    with pytest.raises(InvalidArgument, match="max_messages is 0"):
        broker.read("t", 0, 0)


def test_queue_info(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker(default_ttl_s=30.0, ttl_by_topic={"a2a": 5.0})
    created = clock.now
    broker.publish("chatbot", b"x", lite_topics=["s-1"])
    clock.advance(3)
    broker.publish("chatbot", b"y", lite_topics=["s-1"])
    info = broker.queue_info("chatbot/s-1")
    assert (info.next_offset, info.min_offset, info.subscribers) == (2, 0, 0)
    assert (info.created, info.last_active, info.ttl_s) == (created, created + 3, 30.0)
    broker.publish("a2a", b"x", lite_topics=["task-9"])
    assert broker.queue_info("a2a/task-9").ttl_s == 5.0
    broker.publish("requests", b"x")
    assert broker.queue_info("requests").ttl_s is None  # parent queues do not expire
    assert broker.queue_info("a2a/task-9").queue_id != info.queue_id


def test_concurrent_publishers_get_contiguous_offsets_each_once(open_broker: OpenBroker) -> None:
    broker = open_broker()
    per_thread = 200
    results: dict[int, list[int]] = {}

    def run(worker: int) -> None:
        got = []
        for i in range(0, per_thread, 10):
            batch = [
                PublishRequest("t", f"{worker}:{i + j}".encode(), ("shared",)) for j in range(10)
            ]
            got += [r.offsets[0] for r in broker.publish_batch(batch)]
        results[worker] = got

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    offsets = sorted(o for got in results.values() for o in got)
    assert offsets == list(range(4 * per_thread))
    messages = broker.read("t/shared", 0, 10_000)
    assert [m.offset for m in messages] == offsets
    for worker, got in results.items():  # each publisher's messages keep their order
        bodies = [messages[o].body.decode() for o in got]
        assert bodies == [f"{worker}:{i}" for i in range(per_thread)]


def test_a_closed_broker_refuses_every_call(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish("t", b"x")
    broker.close()
    broker.close()
    for call in (
        lambda: broker.publish("t", b"x"),
        lambda: broker.read("t"),
        lambda: broker.queue_info("t"),
        broker.expire,
        broker.stats,
        lambda: broker.lease("g", "t", 1, 1.0),
    ):
        with pytest.raises(StoreClosed):
            call()


def test_a_failed_index_write_stops_the_broker_until_reopened(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish("t", b"first")
    index = broker.index
    real_write = index.write
    calls = {"n": 0}

    def failing_write(batch: object, *, sync: bool = False) -> None:
        calls["n"] += 1
        raise OSError("disk full")

    index.write = failing_write  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        broker.publish("t", b"second")  # in the log, not in the index
    index.write = real_write  # type: ignore[method-assign]
    with pytest.raises(FailedPrecondition, match="reopen the store to recover"):
        broker.read("t")
    broker.close()
    reopened = open_broker()
    assert [m.body for m in reopened.read("t")] == [b"first", b"second"]
    assert reopened.publish("t", b"third").offsets == (2,)
