"""Publish and subscribe through a real server: order, resume, idempotence, groups."""

from __future__ import annotations

import queue
from collections import defaultdict

import grpc
import pytest

from broker.proto import broker_pb2 as pb
from tests.integration.server.conftest import Server
from tests.integration.server.streams import EARLIEST, LATEST, Stream, at

pytestmark = pytest.mark.integration


def msg(topic: str, lite: str, body: bytes) -> pb.OutboundMessage:
    return pb.OutboundMessage(topic=topic, lite_topics=[lite], body=body)


def test_round_trip_across_many_lite_topics_keeps_each_in_order(server: Server) -> None:
    client = server.stub("acme")
    lites = [f"s-{i}" for i in range(40)]
    stream = Stream(
        client,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="chat", lite_topic=x, start=LATEST) for x in lites],
            credits=10_000,
        ),
    )
    assert stream.changed().total == 40
    for round_ in range(10):
        batch = [msg("chat", x, f"{x}:{round_}".encode()) for x in lites]
        client.Publish(pb.PublishRequest(messages=batch))
    got = stream.deliveries(400)
    by_lite: dict[str, list[int]] = defaultdict(list)
    for d in got:
        assert d.body == f"{d.lite_topic}:{d.offset}".encode()
        by_lite[d.lite_topic].append(d.offset)
    assert dict(by_lite) == {x: list(range(10)) for x in lites}
    stream.close()


def test_credits_bound_what_the_server_sends(server: Server) -> None:
    client = server.stub("acme")
    client.Publish(pb.PublishRequest(messages=[msg("c", "x", b"%d" % i) for i in range(50)]))
    stream = Stream(
        client,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="c", lite_topic="x", start=EARLIEST)], credits=7
        ),
    )
    stream.changed()
    assert [d.offset for d in stream.deliveries(7)] == list(range(7))
    with pytest.raises(queue.Empty):
        stream.next(timeout=0.5)
    stream.send(pb.SubscribeRequest(credits=3))
    assert [d.offset for d in stream.deliveries(3)] == [7, 8, 9]
    stream.close()


def test_resume_from_the_last_offset_gets_every_later_message_once_in_order(
    server: Server,
) -> None:
    client = server.stub("acme")
    client.Publish(pb.PublishRequest(messages=[msg("r", "s", b"%d" % i) for i in range(30)]))
    first = Stream(
        client,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="r", lite_topic="s", start=EARLIEST)], credits=12
        ),
    )
    first.changed()
    seen = [d.offset for d in first.deliveries(12)]
    first.close()
    client.Publish(pb.PublishRequest(messages=[msg("r", "s", b"late")] * 5))
    again = Stream(
        client,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="r", lite_topic="s", start=at(seen[-1] + 1))],
            credits=1000,
        ),
    )
    assert again.changed().started[0].next_offset == 12
    rest = [d.offset for d in again.deliveries(23)]
    assert seen + rest == list(range(35))
    with pytest.raises(queue.Empty):
        again.next(timeout=0.3)
    again.close()


def test_a_resent_batch_is_stored_once(server: Server) -> None:
    client = server.stub("acme")
    batch = [msg("idem", "a", b"%d" % i) for i in range(5)]
    first = client.Publish(pb.PublishRequest(messages=batch, producer_id="prod-1", sequence=100))
    again = client.Publish(pb.PublishRequest(messages=batch, producer_id="prod-1", sequence=100))
    assert [list(r.offsets) for r in first.results] == [[i] for i in range(5)]
    assert [list(r.offsets) for r in again.results] == [[i] for i in range(5)]
    assert all(r.duplicate for r in again.results)
    # A retry that overlaps: the first two are old, the rest new.
    more = [msg("idem", "a", b"%d" % i) for i in range(3, 8)]
    mixed = client.Publish(pb.PublishRequest(messages=more, producer_id="prod-1", sequence=103))
    assert [r.duplicate for r in mixed.results] == [True, True, False, False, False]
    read = client.Read(pb.ReadRequest(topic="idem", lite_topic="a", max_messages=100))
    assert [m.body for m in read.messages] == [b"%d" % i for i in range(8)]
    server.restart()
    client = server.stub("acme")
    after = client.Publish(pb.PublishRequest(messages=more, producer_id="prod-1", sequence=103))
    assert all(r.duplicate for r in after.results)
    read = client.Read(pb.ReadRequest(topic="idem", lite_topic="a", max_messages=100))
    assert len(read.messages) == 8


def test_group_redelivers_with_attempts_and_dead_letters(server: Server) -> None:
    client = server.stub("acme")
    client.Publish(pb.PublishRequest(messages=[msg("jobs", "q", b"job")]))
    stream = Stream(
        client,
        pb.SubscribeRequest(
            open=pb.SubscribeOpen(group="workers", lease_s=0.5),
            add=[pb.Subscription(topic="jobs", lite_topic="q")],
            credits=100,
        ),
    )
    stream.changed()
    (d,) = stream.deliveries(1)
    assert (d.offset, d.attempt) == (0, 1)
    stream.send(pb.SubscribeRequest(nack=[pb.Settle(topic="jobs", lite_topic="q", offsets=[0])]))
    (d,) = stream.deliveries(1)
    assert d.attempt == 2
    (d,) = stream.deliveries(1, timeout=5)  # not acked: the lease runs out
    assert d.attempt == 3
    stream.send(pb.SubscribeRequest(nack=[pb.Settle(topic="jobs", lite_topic="q", offsets=[0])]))
    client.Publish(pb.PublishRequest(messages=[msg("jobs", "q", b"next")]))
    (d,) = stream.deliveries(1)
    assert (d.offset, d.body, d.attempt) == (1, b"next", 1)
    stream.send(pb.SubscribeRequest(ack=[pb.Settle(topic="jobs", lite_topic="q", offsets=[1])]))
    dlq = client.Read(pb.ReadRequest(topic="%DLQ%workers"))
    assert [m.body for m in dlq.messages] == [b"job"]
    stream.close()


def test_a_group_delivers_each_lite_topic_in_order_one_batch_at_a_time(server: Server) -> None:
    client = server.stub("acme")
    client.Publish(pb.PublishRequest(messages=[msg("g", "o", b"%d" % i) for i in range(6)]))
    stream = Stream(
        client,
        pb.SubscribeRequest(
            open=pb.SubscribeOpen(
                group="ord", lease_s=30, max_batch_messages=2, max_lease_messages=4
            ),
            add=[pb.Subscription(topic="g", lite_topic="o")],
            credits=100,
        ),
    )
    stream.changed()
    # A lease of 4 (the credits allow more): one batch, sent as two frames of 2.
    assert [d.offset for d in stream.next().messages] == [0, 1]
    assert [d.offset for d in stream.next().messages] == [2, 3]
    with pytest.raises(queue.Empty):
        stream.next(timeout=0.3)  # one in-flight batch per lite-topic, credits or not
    stream.send(pb.SubscribeRequest(ack=[pb.Settle(topic="g", lite_topic="o", offsets=[0, 1])]))
    with pytest.raises(queue.Empty):
        stream.next(timeout=0.3)  # half of it is still out
    stream.send(pb.SubscribeRequest(ack=[pb.Settle(topic="g", lite_topic="o", offsets=[2, 3])]))
    assert [d.offset for d in stream.deliveries(2)] == [4, 5]
    stream.close()


def test_a_stray_ack_is_a_notice_and_the_stream_goes_on(server: Server) -> None:
    client = server.stub("acme")
    client.Publish(pb.PublishRequest(messages=[msg("n", "x", b"1")]))
    stream = Stream(
        client,
        pb.SubscribeRequest(
            open=pb.SubscribeOpen(group="gg"),
            add=[pb.Subscription(topic="n", lite_topic="x")],
            credits=10,
        ),
    )
    stream.changed()
    stream.deliveries(1)
    stream.send(pb.SubscribeRequest(ack=[pb.Settle(topic="n", lite_topic="x", offsets=[99])]))
    frame = stream.next()
    assert frame.notice.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "99" in frame.notice.message
    stream.send(pb.SubscribeRequest(ack=[pb.Settle(topic="n", lite_topic="x", offsets=[0])]))
    client.Publish(pb.PublishRequest(messages=[msg("n", "x", b"2")]))
    assert [d.body for d in stream.deliveries(1)] == [b"2"]
    stream.close()


def test_request_reply_carries_the_reply_to(server: Server) -> None:
    client = server.stub("acme")
    stream = Stream(
        client,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="agent", lite_topic="inbox", start=LATEST)], credits=10
        ),
    )
    stream.changed()
    request = pb.OutboundMessage(
        topic="agent",
        lite_topics=["inbox"],
        body=b"ask",
        reply_to="a2a/task-7",
        properties={"k": "v"},
    )
    client.Publish(pb.PublishRequest(messages=[request]))
    (d,) = stream.deliveries(1)
    assert (d.reply_to, dict(d.properties)) == ("a2a/task-7", {"k": "v"})
    topic, _, lite = d.reply_to.partition("/")
    client.Publish(pb.PublishRequest(messages=[msg(topic, lite, b"answer")]))
    read = client.Read(pb.ReadRequest(topic="a2a", lite_topic="task-7"))
    assert [m.body for m in read.messages] == [b"answer"]
    stream.close()


def test_a_compact_stream_gets_plain_messages_as_runs_and_the_rest_as_deliveries(
    server: Server,
) -> None:
    client = server.stub("acme")
    client.Publish(pb.PublishRequest(messages=[msg("cmp", "a", b"%d" % i) for i in range(5)]))
    rich = pb.OutboundMessage(topic="cmp", lite_topics=["b"], body=b"r", properties={"k": "v"})
    client.Publish(pb.PublishRequest(messages=[msg("cmp", "b", b"p"), rich]))
    stream = Stream(
        client,
        pb.SubscribeRequest(
            open=pb.SubscribeOpen(
                group="cg", lease_s=30, max_batch_messages=3, max_lease_messages=10, compact=True
            ),
            add=[
                pb.Subscription(topic="cmp", lite_topic="a", start=EARLIEST),
                pb.Subscription(topic="cmp", lite_topic="b", start=EARLIEST),
            ],
            credits=100,
        ),
    )
    stream.changed()
    got: dict[str, list[tuple[int, bytes, int, dict[str, str], str]]] = defaultdict(list)
    while sum(map(len, got.values())) < 7:
        frame = stream.next()
        assert len(frame.messages) + sum(len(r.offsets) for r in frame.runs) <= 3
        for d in frame.messages:  # a client reads deliveries first, then runs
            got[d.lite_topic].append((d.offset, d.body, d.attempt, dict(d.properties), "d"))
        for run in frame.runs:
            assert run.lease_deadline > 0
            got[run.lite_topic] += [
                (offset, body, attempt, {}, "run")
                for offset, body, attempt in zip(run.offsets, run.bodies, run.attempts, strict=True)
            ]
    assert got["a"] == [(i, b"%d" % i, 1, {}, "run") for i in range(5)]
    # b in order: its plain message may ride a run, the one with properties cannot
    assert [(o, b, a, p) for o, b, a, p, _ in got["b"]] == [
        (0, b"p", 1, {}),
        (1, b"r", 1, {"k": "v"}),
    ]
    assert got["b"][1][4] == "d"
    stream.close()


def test_a_group_leases_one_frame_at_a_time_unless_asked_for_more(server: Server) -> None:
    client = server.stub("acme")
    client.Publish(pb.PublishRequest(messages=[msg("w", "o", b"%d" % i) for i in range(5)]))
    stream = Stream(
        client,
        pb.SubscribeRequest(
            open=pb.SubscribeOpen(group="slow", lease_s=30, max_batch_messages=1),
            add=[pb.Subscription(topic="w", lite_topic="o")],
            credits=1000,
        ),
    )
    stream.changed()
    # A worker taking one at a time holds one under its lease, however many credits.
    assert [d.offset for d in stream.next().messages] == [0]
    with pytest.raises(queue.Empty):
        stream.next(timeout=0.3)
    stream.send(pb.SubscribeRequest(ack=[pb.Settle(topic="w", lite_topic="o", offsets=[0])]))
    assert [d.offset for d in stream.next().messages] == [1]
    stream.close()
