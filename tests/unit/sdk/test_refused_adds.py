"""SessionState: an add the server refuses is undone, kept for its waiter or told."""

from __future__ import annotations

from broker.proto import broker_pb2 as pb
from tidegate.errors import ResourceExhausted, refused
from tidegate.session import SessionState
from tidegate.values import Message, QueueRef, Start

S1 = QueueRef("chat", "s-1")
S2 = QueueRef("chat", "s-2")
S3 = QueueRef("chat", "s-3")
LIMIT = "add refused, the add was not made: ... above its limit max_subscriptions=2"


def refusal(*refs: QueueRef, message: str = LIMIT) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(
        changed=pb.SubscriptionsChanged(
            refused=pb.StreamNotice(code=8, message=message),
            refused_adds=[pb.QueueRef(topic=r.topic, lite_topic=r.lite_topic) for r in refs],
            total=2,
        )
    )


def changed(*started: tuple[QueueRef, int]) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(
        changed=pb.SubscriptionsChanged(
            started=[
                pb.SubscriptionStarted(topic=r.topic, lite_topic=r.lite_topic, next_offset=o)
                for r, o in started
            ]
        )
    )


def delivery(ref: QueueRef, offset: int) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(
        messages=[pb.Delivery(topic=ref.topic, lite_topic=ref.lite_topic, offset=offset, body=b"x")]
    )


def opened(*refs: QueueRef) -> SessionState:
    state = SessionState()
    state.add(list(refs), Start.earliest())
    state.open_request()
    state.feed(changed(*((r, 0) for r in refs)))
    return state


def offsets(messages: list[Message]) -> list[tuple[str, int]]:
    return [(m.lite_topic, m.offset) for m in messages]


def test_a_refused_add_is_forgotten_and_kept_for_its_waiter() -> None:
    state = opened(S1, S2)
    change = state.add([S3], Start.earliest())
    state.feed(refusal(S3))
    assert state.confirmed == change
    assert state.subscriptions() == (S1, S2)
    notice = state.refusal(change)
    assert notice is not None
    assert (notice.code, notice.ref) == ("RESOURCE_EXHAUSTED", S3)
    assert "max_subscriptions=2" in notice.message
    assert state.refusal(change) is None  # handed over once
    assert state.notices == []
    assert state.open_refusal is None


def test_a_refused_add_nobody_waits_for_is_a_notice() -> None:
    state = opened(S1)
    change = state.add([S2, S3], Start.earliest(), tell=True)
    state.feed(refusal(S2, S3))
    (notice,) = state.notices
    assert (notice.code, notice.ref) == ("RESOURCE_EXHAUSTED", None)  # two adds: none named
    assert state.refusal(change) is None
    assert state.subscriptions() == (S1,)


def test_a_refused_move_of_a_held_start_keeps_the_old_position() -> None:
    state = opened(S1)
    assert offsets(state.feed(delivery(S1, 0))) == [("s-1", 0)]
    state.add([S1, S2], Start.earliest())  # moves S1's start: refused whole
    assert offsets(state.feed(delivery(S1, 1))) == [("s-1", 1)]  # from the old cursor
    state.feed(refusal(S1, S2))
    assert state.subscriptions() == (S1,)
    assert state.feed(delivery(S1, 1)) == []  # seen already: still dropped
    assert state.duplicates == 1
    state.lost()
    (resumed,) = state.open_request().add
    assert (resumed.lite_topic, resumed.start.kind, resumed.start.offset) == (
        "s-1",
        pb.StartPosition.OFFSET,
        2,
    )


def test_a_later_change_of_the_same_lite_topic_wins_over_the_undo() -> None:
    state = opened(S1)
    first = state.add([S2], Start.earliest())
    second = state.add([S2], Start.latest())
    state.feed(refusal(S2))
    assert state.confirmed == first
    assert state.subscriptions() == (S1, S2)  # the second add is still in flight
    state.feed(changed((S2, 7)))
    assert state.confirmed == second
    assert state.refusal(second) is None


def test_a_refused_first_request_is_the_streams_refusal() -> None:
    state = SessionState()
    change = state.add([S1, S2, S3], Start.earliest())
    state.open_request()
    state.feed(refusal(S1, S2, S3))
    assert state.confirmed == change
    assert state.open_refusal is not None
    assert state.open_refusal.code == "RESOURCE_EXHAUSTED"
    assert state.refusal(change) is None


def test_refusals_become_the_sdk_errors() -> None:
    error = refused(
        "RESOURCE_EXHAUSTED", "tenant 't' holds 2\n  max_subscriptions=2", method="Subscribe"
    )
    assert isinstance(error, ResourceExhausted)
    assert (
        str(error)
        == "Subscribe refused (RESOURCE_EXHAUSTED): tenant 't' holds 2 max_subscriptions=2"
    )
    assert refused("NOT_FOUND", "", method="Subscribe").code == "NOT_FOUND"
