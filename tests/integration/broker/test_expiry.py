"""Lite-topic TTL, segment reclamation and retention, on an injected clock."""

from __future__ import annotations

import pytest

from broker import FailedPrecondition, NotFound, PublishRequest
from tests.integration.broker.conftest import FakeClock, OpenBroker


def test_an_idle_lite_topic_expires_after_its_ttl(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker(default_ttl_s=60.0)
    broker.publish("chatbot", b"x", lite_topics=["idle", "busy"])
    clock.advance(59)
    assert broker.expire().expired_queues == 0
    broker.publish("chatbot", b"y", lite_topics=["busy"])  # restarts busy's TTL
    clock.advance(1)
    report = broker.expire()
    assert report.expired_queues == 1
    with pytest.raises(NotFound):
        broker.read("chatbot/idle")
    assert [m.body for m in broker.read("chatbot/busy")] == [b"x", b"y"]
    clock.advance(60)
    assert broker.expire().expired_queues == 1
    assert broker.stats().queues == 0


def test_ttl_is_per_parent_topic_and_parents_never_expire(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker(default_ttl_s=100.0, ttl_by_topic={"a2a": 10.0, "keep": None})
    broker.publish("a2a", b"x", lite_topics=["t-1"])
    broker.publish("chatbot", b"x", lite_topics=["s-1"])
    broker.publish("keep", b"x", lite_topics=["forever"])
    broker.publish("requests", b"x")
    clock.advance(10)
    assert broker.expire().expired_queues == 1  # a2a/t-1
    clock.advance(90)
    assert broker.expire().expired_queues == 1  # chatbot/s-1
    clock.advance(10**6)
    assert broker.expire().expired_queues == 0
    assert broker.read("keep/forever")
    assert broker.read("requests")


def test_a_subscribed_lite_topic_never_expires(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker(default_ttl_s=10.0)
    info = broker.subscribe("chatbot/s-1")  # created on subscribe
    assert (info.next_offset, info.subscribers) == (0, 1)
    broker.subscribe("chatbot/s-1")
    broker.publish("chatbot", b"x", lite_topics=["s-1"])
    clock.advance(1000)
    assert broker.expire().expired_queues == 0
    broker.unsubscribe("chatbot/s-1")
    assert broker.queue_info("chatbot/s-1").subscribers == 1
    clock.advance(1000)
    assert broker.expire().expired_queues == 0
    broker.unsubscribe("chatbot/s-1")  # the TTL runs from now
    clock.advance(9)
    assert broker.expire().expired_queues == 0
    clock.advance(1)
    assert broker.expire().expired_queues == 1
    with pytest.raises(FailedPrecondition, match="no subscriber to remove"):
        broker.unsubscribe("chatbot/s-1")


def test_an_expired_topic_comes_back_empty_with_a_new_id(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker(default_ttl_s=5.0)
    broker.publish_batch([PublishRequest("chatbot", b"old", ("s-1",))] * 3)
    old = broker.queue_info("chatbot/s-1")
    broker.commit_offset("g", "chatbot/s-1", 2)
    clock.advance(5)
    assert broker.expire().expired_queues == 1
    assert broker.publish("chatbot", b"new", lite_topics=["s-1"]).offsets == (0,)
    new = broker.queue_info("chatbot/s-1")
    assert new.queue_id > old.queue_id  # ids are never reused
    assert [m.body for m in broker.read("chatbot/s-1")] == [b"new"]
    assert broker.committed_offset("g", "chatbot/s-1") is None  # group state went too


def test_expiry_survives_a_restart(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker(default_ttl_s=30.0)
    broker.publish_batch([PublishRequest("c", b"x", (f"s-{i}",)) for i in range(100)])
    broker.subscribe("c/s-0")
    broker.close()
    clock.advance(31)
    broker = open_broker(default_ttl_s=30.0)  # subscriptions do not survive a restart
    assert broker.expire().expired_queues == 100


def test_expiry_works_in_chunks_over_many_topics(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker(default_ttl_s=10.0, hot_topics=16)
    start = clock.now
    for batch in range(10):  # batch b is idle from start + b: due at start + b + 10
        broker.publish_batch([PublishRequest("c", b"x", (f"s-{batch}-{i}",)) for i in range(1000)])
        clock.advance(1.0)
    broker.publish("c", b"x", lite_topics=["s-0-0"])  # used again at start + 10
    clock.now = start + 10.5
    assert broker.expire().expired_queues == 999
    clock.now = start + 15.5  # batches 1..5: more than one chunk of names
    assert broker.expire().expired_queues == 5000
    assert broker.read("c/s-0-0")
    assert broker.stats().hot_queues <= 16
    clock.now = start + 30
    assert broker.expire().expired_queues == 4001
    assert broker.stats().queues == 0


def test_segments_no_live_queue_needs_are_reclaimed(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker(default_ttl_s=10.0, segment_bytes=8192)
    body = b"b" * 1000
    for i in range(40):  # ~40 KiB over several segments, one topic per message
        broker.publish("chatbot", body, lite_topics=[f"s-{i}"])
        clock.advance(1)
    before = broker.stats()
    assert before.log_segments > 3
    report = broker.expire()  # s-0 .. s-30 are idle for >= 10 s
    assert report.expired_queues == 31
    after = broker.stats()
    assert report.reclaimed_bytes > 0
    assert after.log_start > before.log_start
    for i in range(31, 40):  # everything still live reads back
        assert broker.read(f"chatbot/s-{i}")[0].body == body
    broker.close()
    broker = open_broker(default_ttl_s=10.0, segment_bytes=8192)
    assert broker.read("chatbot/s-39")[0].body == body


def test_a_parent_queue_holds_its_segments(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker(default_ttl_s=1.0, segment_bytes=8192)
    broker.publish("requests", b"first")  # a parent queue: never expires
    for i in range(30):
        broker.publish("chatbot", b"b" * 1000, lite_topics=[f"s-{i}"])
    clock.advance(5)
    report = broker.expire()
    assert report.expired_queues == 30
    assert report.reclaimed_bytes == 0
    assert broker.read("requests")[0].body == b"first"


def test_reads_skip_offsets_lost_to_retention(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker(segment_bytes=8192, retention_bytes=16384)
    for i in range(60):
        broker.publish("requests", bytes([i]) * 900)
    report = broker.expire()
    assert report.retention_bytes > 0
    messages = broker.read("requests", 0, 100)
    first = messages[0].offset
    assert first > 0
    assert [m.offset for m in messages] == list(range(first, 60))
    assert all(m.body == bytes([m.offset]) * 900 for m in messages)
    assert broker.queue_info("requests").min_offset == first  # forgotten below it
    assert broker.read("requests", first + 3, 1)[0].offset == first + 3
    broker.close()
    broker = open_broker(segment_bytes=8192, retention_bytes=16384)
    assert broker.read("requests", 0, 1)[0].offset == first


def test_age_retention_uses_the_injected_clock(open_broker: OpenBroker, clock: FakeClock) -> None:
    broker = open_broker(segment_bytes=8192, retention_s=3600.0)
    for i in range(20):
        broker.publish("requests", bytes([i]) * 1000)
    assert broker.expire().retention_bytes == 0
    clock.advance(3600)
    assert broker.expire().retention_bytes > 0
    assert broker.read("requests", 0, 1)[0].offset > 0
