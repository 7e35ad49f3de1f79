"""Subscribe frames: deliveries built in place carry every field, frames split where they must."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

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


def _as_deliveries(frame: pb.SubscribeResponse) -> list[pb.Delivery]:
    """A compact frame's deliveries as Deliveries: ``messages`` first, then the runs."""
    out = list(frame.messages)
    for run in frame.runs:
        attempts = list(run.attempts) or [0] * len(run.offsets)
        for offset, timestamp, body, attempt in zip(
            run.offsets, run.timestamps, run.bodies, attempts, strict=True
        ):
            out.append(
                pb.Delivery(
                    topic=run.topic,
                    lite_topic=run.lite_topic,
                    offset=offset,
                    attempt=attempt,
                    timestamp=timestamp,
                    body=body,
                    size=len(body),
                    lease_deadline=run.lease_deadline,
                )
            )
    return out


def _by_queue(deliveries: list[pb.Delivery]) -> dict[tuple[str, str], list[pb.Delivery]]:
    out: dict[tuple[str, str], list[pb.Delivery]] = {}
    for d in deliveries:
        out.setdefault((d.topic, d.lite_topic), []).append(d)
    return out


def test_a_compact_frame_carries_plain_messages_as_one_run_per_queue() -> None:
    messages = [_message(Q1, i, attempt=1 + i % 2) for i in range(3)] + [_message(Q2, 9)]
    batch = Batch(messages, {Q1: 42.0}, credits_left=4)
    [(frame, chunked)] = list(frames(batch, 1000, compact=True))
    assert chunked is None
    assert frame.credits_left == 4
    assert not frame.messages
    one, two = frame.runs
    assert (one.topic, one.lite_topic, list(one.offsets)) == ("chatbot", "s-1", [0, 1, 2])
    assert list(one.attempts) == [1, 2, 1]
    assert one.lease_deadline == 42.0
    assert (two.topic, two.lite_topic, list(two.attempts)) == ("jobs", "", [])
    full = [d for f, _ in frames(batch, 1000) for d in f.messages]
    assert _as_deliveries(frame) == full


def test_a_queue_with_a_rich_message_goes_whole_as_deliveries_and_keeps_its_order() -> None:
    rich = _message(Q1, 1, properties={"k": "v", REPLY_TO: "a2a/t-1"})
    messages = [_message(Q2, 0), _message(Q1, 0), rich, _message(Q1, 2), _message(Q2, 1)]
    [(frame, _)] = list(frames(Batch(messages, {}, credits_left=0), 1000, compact=True))
    assert [d.offset for d in frame.messages] == [0, 1, 2]  # all of Q1, in order
    assert all(d.topic == "chatbot" for d in frame.messages)
    assert [list(r.offsets) for r in frame.runs] == [[0], [1]]  # Q2, in two pieces
    expected = [d for f, _ in frames(Batch(messages, {}, credits_left=0), 1000) for d in f.messages]
    assert _by_queue(_as_deliveries(frame)) == _by_queue(expected)


def test_compact_frames_split_where_plain_ones_do() -> None:
    big = _message(Q1, 3, body=b"", size=10**8, chunked=True)
    messages = [_message(Q1, i) for i in range(3)] + [big] + [_message(Q1, i) for i in range(4, 11)]
    plain = list(frames(Batch(messages, {}, credits_left=0), 4))
    compact = list(frames(Batch(messages, {}, credits_left=0), 4, compact=True))
    assert [c for _, c in compact] == [c for _, c in plain]
    assert [_as_deliveries(f) for f, _ in compact] == [list(f.messages) for f, _ in plain]
    body = b"x" * (FRAME_BYTES // 4)
    heavy = [_message(Q1, i, body=body, size=len(body)) for i in range(10)]
    out = list(frames(Batch(heavy, {}, credits_left=0), 1000, compact=True))
    assert [len(f.runs[0].offsets) for f, _ in out] == [4, 4, 2]


def test_a_queue_met_again_in_a_frame_keeps_its_order() -> None:
    rich = {"k": "v"}
    # Q1 plain, then Q2, then Q1 again: rich (cannot follow its run) and plain
    # (must follow its deliveries).
    first = [_message(Q1, 0), _message(Q2, 0), _message(Q1, 1, properties=rich)]
    out = list(frames(Batch(first, {}, credits_left=0), 1000, compact=True))
    assert [[d.offset for d in _as_deliveries(f) if d.topic == "chatbot"] for f, _ in out] == [
        [0],
        [1],
    ]
    second = [_message(Q1, 0, properties=rich), _message(Q2, 0), _message(Q1, 1)]
    [(frame, _)] = list(frames(Batch(second, {}, credits_left=0), 1000, compact=True))
    assert [d.offset for d in frame.messages] == [0, 1]


_KINDS = st.sampled_from(["plain", "plain", "plain", "rich", "chunked", "heavy"])


def _random_batch(pieces: list[tuple[int, list[str]]]) -> list[Message]:
    """Messages of a few queues, each queue's together as a pull gives them."""
    out: list[Message] = []
    queues = [Q1, Q2, QueueName("acme", "chatbot", "s-2")]
    for which, kinds in pieces:
        queue = queues[which]
        for kind in kinds:
            offset = sum(1 for m in out if m.queue == queue)
            if kind == "rich":
                out.append(_message(queue, offset, properties={"k": str(offset)}))
            elif kind == "chunked":
                out.append(_message(queue, offset, body=b"", size=10**8, chunked=True))
            elif kind == "heavy":
                body = b"h" * (FRAME_BYTES // 3)
                out.append(_message(queue, offset, body=body, size=len(body)))
            else:
                out.append(_message(queue, offset, attempt=offset % 3))
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.lists(_KINDS, min_size=1, max_size=12)), max_size=5),
    st.integers(1, 9),
)
def test_compact_frames_keep_each_queue_s_order_and_every_bound(
    pieces: list[tuple[int, list[str]]], max_messages: int
) -> None:
    messages = _random_batch(pieces)
    batch = Batch(messages, {Q1: 7.0}, credits_left=3)
    out = list(frames(batch, max_messages, compact=True))
    delivered: list[pb.Delivery] = []
    for frame, chunked in out:
        in_runs = {(r.topic, r.lite_topic) for r in frame.runs}
        assert not in_runs & {(d.topic, d.lite_topic) for d in frame.messages}
        got = _as_deliveries(frame)
        plain = [d for d in got if not d.chunked]
        assert got
        assert len(plain) <= max_messages
        sizes = [d.size for d in plain]  # the one that reached the budget is in it
        assert not sizes or sum(sizes) - max(sizes) < FRAME_BYTES
        if chunked is not None:  # it ends its frame, as the last of its queue there
            mine = [
                d
                for d in got
                if (d.topic, d.lite_topic) == (chunked.queue.topic, chunked.queue.lite)
            ]
            assert mine[-1].offset == chunked.offset
            assert mine[-1].chunked
        assert frame.credits_left == 3
        delivered += got
    assert [c for _, c in out if c is not None] == [m for m in messages if m.chunked]
    plain_frames = [d for f, _ in frames(batch, max_messages) for d in f.messages]
    assert _by_queue(delivered) == _by_queue(plain_frames)
    if (
        all(not m.properties and not m.chunked for m in messages)
        and len({m.queue for m in messages}) == 1
    ):
        assert [len(_as_deliveries(f)) for f, _ in out] == [
            len(f.messages) for f, _ in frames(batch, max_messages)
        ]


def test_a_frame_size_below_one_is_one() -> None:
    messages = [_message(Q1, i) for i in range(3)]
    for compact in (False, True):
        out = list(frames(Batch(messages, {}, credits_left=0), 0, compact=compact))
        assert [len(_as_deliveries(f)) for f, _ in out] == [1, 1, 1]
