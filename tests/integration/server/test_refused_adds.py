"""A Subscribe add a tenant limit refuses is answered in order and the stream goes on.

The ``tiny`` tenant holds at most 2 subscriptions and 3 live lite-topics.
"""

from __future__ import annotations

import grpc
import pytest

from broker.proto import broker_pb2 as pb
from tests.integration.server.conftest import Client, Server, wait_for
from tests.integration.server.streams import EARLIEST, LATEST, Stream

pytestmark = pytest.mark.integration
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


def add(*lites: str, start: pb.StartPosition = LATEST) -> pb.SubscribeRequest:
    return pb.SubscribeRequest(
        add=[pb.Subscription(topic="chat", lite_topic=lite, start=start) for lite in lites]
    )


def remove(*lites: str) -> pb.SubscribeRequest:
    return pb.SubscribeRequest(
        remove=[pb.QueueRef(topic="chat", lite_topic=lite) for lite in lites]
    )


def publish(client: Client, lite: str, body: bytes) -> None:
    client.Publish(
        pb.PublishRequest(
            messages=[pb.OutboundMessage(topic="chat", lite_topics=[lite], body=body)]
        )
    )


def bodies(stream: Stream, count: int) -> list[tuple[str, bytes]]:
    return sorted((d.lite_topic, d.body) for d in stream.deliveries(count))


def held(client: Client) -> tuple[int, int]:
    status = client.Status(pb.StatusRequest())
    return status.subscriptions, status.lite_topics


def test_an_add_over_max_subscriptions_is_refused_and_the_stream_goes_on(server: Server) -> None:
    tiny = server.stub("tiny")
    first = add("a", "b")
    first.credits = 100
    stream = Stream(tiny, first)
    try:
        assert stream.changed().total == 2
        stream.send(add("c"))
        refused = stream.changed()
        assert refused.refused.code == EXHAUSTED
        assert "max_subscriptions=2" in refused.refused.message
        assert "not made" in refused.refused.message
        assert [(r.topic, r.lite_topic) for r in refused.refused_adds] == [("chat", "c")]
        assert (list(refused.started), refused.total) == ([], 2)
        # The subscriptions held keep delivering on the same stream.
        publish(tiny, "a", b"a-1")
        publish(tiny, "b", b"b-1")
        publish(tiny, "c", b"c-1")  # not subscribed: never delivered
        assert bodies(stream, 2) == [("a", b"a-1"), ("b", b"b-1")]
        # Nothing was leaked: one out, one in fits again.
        assert held(tiny)[0] == 2
        stream.send(remove("b"))
        assert (stream.changed().removed, held(tiny)[0]) == (1, 1)
        stream.send(add("c"))
        started = stream.changed()
        assert not started.HasField("refused")
        assert ([s.lite_topic for s in started.started], started.total) == (["c"], 2)
        publish(tiny, "c", b"c-2")
        publish(tiny, "a", b"a-2")
        assert bodies(stream, 2) == [("a", b"a-2"), ("c", b"c-2")]
        assert held(tiny)[0] == 2
    finally:
        stream.close()


def test_a_request_of_several_adds_is_refused_whole(server: Server) -> None:
    tiny = server.stub("tiny")
    first = add("a", start=EARLIEST)
    first.credits = 100
    stream = Stream(tiny, first)
    try:
        stream.changed()
        stream.send(add("b", "c"))  # 1 + 2 > 2: neither is added
        refused = stream.changed()
        assert refused.refused.code == EXHAUSTED
        assert "all 2 adds of the request were not made" in refused.refused.message
        assert [r.lite_topic for r in refused.refused_adds] == ["b", "c"]
        assert refused.total == 1
        assert held(tiny)[0] == 1
        publish(tiny, "b", b"b-1")
        publish(tiny, "a", b"a-1")
        assert bodies(stream, 1) == [("a", b"a-1")]
        # Re-adding one already held with one new: refused whole, the held one keeps its place.
        stream.send(add("a", "b", "c", start=EARLIEST))
        assert stream.changed().refused.code == EXHAUSTED
        publish(tiny, "a", b"a-2")
        assert bodies(stream, 1) == [("a", b"a-2")]  # no redelivery of a-1 from earliest
        stream.send(add("b", start=EARLIEST))
        assert stream.changed().total == 2
        assert bodies(stream, 1) == [("b", b"b-1")]
    finally:
        stream.close()


def test_an_add_over_max_lite_topics_is_refused_and_counts_nothing(server: Server) -> None:
    tiny = server.stub("tiny")
    for lite in ("a", "b", "c"):
        publish(tiny, lite, lite.encode())
    first = add("a", start=EARLIEST)
    first.credits = 100
    stream = Stream(tiny, first)
    try:
        stream.changed()
        assert bodies(stream, 1) == [("a", b"a")]
        stream.send(add("new"))
        refused = stream.changed()
        assert refused.refused.code == EXHAUSTED
        assert "max_lite_topics=3" in refused.refused.message
        assert held(tiny) == (1, 3)
        stream.send(add("b", start=EARLIEST))  # live already: fits
        assert stream.changed().total == 2
        assert bodies(stream, 1) == [("b", b"b")]
        assert held(tiny) == (2, 3)
    finally:
        stream.close()


def test_refusals_come_in_order_with_the_other_confirmations(server: Server) -> None:
    tiny = server.stub("tiny")
    stream = Stream(tiny, add("a", "b"))
    try:
        stream.changed()
        stream.send(add("c"))
        stream.send(remove("a"))
        stream.send(add("c"))
        stream.send(add("d"))
        answers = [stream.changed() for _ in range(4)]
        assert [a.HasField("refused") for a in answers] == [True, False, False, True]
        assert [a.removed for a in answers] == [0, 1, 0, 0]
        assert [[s.lite_topic for s in a.started] for a in answers] == [[], [], ["c"], []]
        assert [a.total for a in answers] == [2, 1, 2, 2]
    finally:
        stream.close()


def test_a_refused_first_request_leaves_an_open_stream(server: Server) -> None:
    tiny = server.stub("tiny")
    first = add("a", "b", "c")
    first.credits = 10
    stream = Stream(tiny, first)
    try:
        refused = stream.changed()
        assert (refused.refused.code, refused.total) == (EXHAUSTED, 0)
        assert held(tiny)[0] == 0
        stream.send(add("a"))
        assert stream.changed().total == 1
        publish(tiny, "a", b"a-1")
        assert bodies(stream, 1) == [("a", b"a-1")]
    finally:
        stream.close()
    wait_for(lambda: held(tiny)[0] == 0)  # closing the stream gives its subscription back
