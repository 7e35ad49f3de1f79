"""Which plans go in the compact form, and how its answer becomes one result per message."""

from __future__ import annotations

import pytest

from broker.proto import broker_pb2 as pb
from tidegate import compact
from tidegate.errors import ServerError
from tidegate.values import Outgoing, PublishResult
from tidegate.wire import publish_request as per_message_request


def out(body: bytes, lites: tuple[str, ...] = ("a",), topic: str = "t") -> Outgoing:
    return Outgoing(topic, body, lites)


def test_one_destination_without_extras_is_compact() -> None:
    messages = [out(b"1", ("a", "b")), out(b"22", ("a", "b")), out(b"", ("a", "b"))]
    request = compact.publish_request(messages, "p", 7)
    assert request == pb.PublishRequest(
        batch=pb.PublishBatch(topic="t", lite_topics=["a", "b"], bodies=[b"1", b"22", b""]),
        producer_id="p",
        sequence=7,
    )


@pytest.mark.parametrize(
    "messages",
    [
        [out(b"1")],
        [out(b"1"), out(b"2", ("b",))],
        [out(b"1"), out(b"2", ("a", "b"))],
        [out(b"1"), out(b"2", topic="u")],
        [out(b"1"), Outgoing("t", b"2", ("a",), {"k": "v"})],
        [out(b"1"), Outgoing("t", b"2", ("a",), reply_to="t/r")],
    ],
    ids=["one message", "lite", "lite list", "topic", "properties", "reply_to"],
)
def test_anything_else_goes_per_message(messages: list[Outgoing]) -> None:
    assert compact.compact_request(messages, "p", 1) is None
    assert compact.publish_request(messages, "p", 1) == per_message_request(messages, "p", 1)


def test_a_compact_answer_becomes_the_per_message_results() -> None:
    messages = [out(b"x" * n, ("a", "b")) for n in range(4)]
    request = compact.publish_request(messages, "p", 10)
    response = pb.PublishResponse(
        results=[
            pb.PublishResult(
                topic="t",
                lite_topics=["a", "b"],
                offsets=[3, 8],
                timestamp=1.0,
                duplicate=True,
                sequence=10,
                size=0,
            )
        ],
        batch=pb.PublishBatchResult(
            duplicates=1, stored=3, first_offsets=[20, 5], timestamp=2.0, first_sequence=11
        ),
    )
    assert compact.publish_results(messages, request, response) == [
        PublishResult("t", ("a", "b"), (3, 8), 1.0, True, 10, 0),
        PublishResult("t", ("a", "b"), (20, 5), 2.0, False, 11, 1),
        PublishResult("t", ("a", "b"), (21, 6), 2.0, False, 12, 2),
        PublishResult("t", ("a", "b"), (22, 7), 2.0, False, 13, 3),
    ]


def test_without_a_producer_every_sequence_is_zero() -> None:
    messages = [out(b"1"), out(b"2")]
    request = compact.publish_request(messages, "", 0)
    response = pb.PublishResponse(
        batch=pb.PublishBatchResult(stored=2, first_offsets=[4], timestamp=3.0)
    )
    results = compact.publish_results(messages, request, response)
    assert [(r.offsets, r.sequence) for r in results] == [((4,), 0), ((5,), 0)]


@pytest.mark.parametrize(
    "response",
    [
        pb.PublishResponse(),  # a server that ignored the batch
        pb.PublishResponse(batch=pb.PublishBatchResult(stored=1, first_offsets=[0])),
        pb.PublishResponse(batch=pb.PublishBatchResult(duplicates=1, stored=1, first_offsets=[0])),
        pb.PublishResponse(batch=pb.PublishBatchResult(stored=2, first_offsets=[0, 1])),
    ],
)
def test_an_answer_that_does_not_account_for_the_batch_is_a_server_error(
    response: pb.PublishResponse,
) -> None:
    messages = [out(b"1"), out(b"2")]
    request = compact.publish_request(messages, "p", 1)
    with pytest.raises(ServerError, match="batch of 2 messages"):
        compact.publish_results(messages, request, response)
