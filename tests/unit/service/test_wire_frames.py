"""Subscribe frames: deliveries built in place carry every field, frames split where they must."""

from __future__ import annotations

from broker.proto import broker_pb2 as pb
from broker.session import Batch
from broker.types import Message, QueueName
from broker.wire import FRAME_BYTES, REPLY_TO, delivery, frames

Q1 = QueueName("acme", "chatbot", "s-1")
Q2 = QueueName("acme", "jobs")


def _message(queue: QueueName, offset: int, **fields: object) -> Message:
    values: dict[str, object] = {
        "position": 100 + offset,
        "timestamp": 1.5 + offset,
        "properties": {},
        "size": 3,
        "body": b"abc",
    }
    values.update(fields)
    return Message(queue, offset, **values)  # type: ignore[arg-type]


def test_a_delivery_carries_every_field() -> None:
    message = _message(
        Q1, 7, properties={"k": "v", REPLY_TO: "a2a/t-1"}, attempt=2, size=3, body=b"abc"
    )
    assert delivery(message, 99.0) == pb.Delivery(
        topic="chatbot",
        lite_topic="s-1",
        offset=7,
        attempt=2,
        timestamp=8.5,
        properties={"k": "v"},
        body=b"abc",
        size=3,
        reply_to="a2a/t-1",
        lease_deadline=99.0,
    )
    assert delivery(_message(Q2, 0), None) == pb.Delivery(
        topic="jobs", timestamp=1.5, body=b"abc", size=3
    )


def test_frames_hold_what_delivery_builds_with_each_queue_s_deadline() -> None:
    messages = [_message(Q1, 0), _message(Q2, 0, attempt=1), _message(Q1, 1)]
    batch = Batch(messages, {Q2: 42.0}, credits_left=17)
    [(frame, chunked)] = list(frames(batch, 1000))
    assert chunked is None
    assert frame.credits_left == 17
    assert list(frame.messages) == [
        delivery(messages[0], None),
        delivery(messages[1], 42.0),
        delivery(messages[2], None),
    ]


def test_a_chunked_delivery_ends_its_frame() -> None:
    big = _message(Q1, 1, body=b"", size=10**8, chunked=True)
    messages = [_message(Q1, 0), big, _message(Q1, 2)]
    out = list(frames(Batch(messages, {}, credits_left=5), 1000))
    assert [(len(f.messages), c) for f, c in out] == [(2, big), (1, None)]
    assert out[0][0].messages[1].chunked
    assert all(f.credits_left == 5 for f, _ in out)


def test_frames_split_at_the_frame_budget() -> None:
    body = b"x" * (FRAME_BYTES // 4)
    messages = [_message(Q1, i, body=body, size=len(body)) for i in range(10)]
    out = list(frames(Batch(messages, {}, credits_left=0), 1000))
    assert [len(f.messages) for f, _ in out] == [4, 4, 2]
    assert [d.offset for f, _ in out for d in f.messages] == list(range(10))


def test_an_empty_batch_makes_no_frame() -> None:
    assert list(frames(Batch([], {}, credits_left=3), 1000)) == []


def test_frames_split_at_the_consumer_s_frame_size() -> None:
    messages = [_message(Q1, i) for i in range(7)]
    out = list(frames(Batch(messages, {Q1: 5.0}, credits_left=0), 3))
    assert [len(f.messages) for f, _ in out] == [3, 3, 1]
    assert [d.offset for f, _ in out for d in f.messages] == list(range(7))
    assert all(d.lease_deadline == 5.0 for f, _ in out for d in f.messages)
