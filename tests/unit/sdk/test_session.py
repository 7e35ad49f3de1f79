"""SessionState: resume exactly once in order, credits as a bounded buffer, confirmations."""

from __future__ import annotations

import pytest

from broker.proto import broker_pb2 as pb
from tidegate.errors import InvalidArgument
from tidegate.session import SessionState
from tidegate.values import Message, QueueRef, Start

S1 = QueueRef("chat", "s-1")
S2 = QueueRef("chat", "s-2")


def delivery(ref: QueueRef, offset: int, body: bytes = b"", attempt: int = 0) -> pb.Delivery:
    return pb.Delivery(
        topic=ref.topic,
        lite_topic=ref.lite_topic,
        offset=offset,
        body=body or b"%d" % offset,
        size=len(body or b"%d" % offset),
        attempt=attempt,
    )


def frame(*deliveries: pb.Delivery) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(messages=deliveries)


def changed(*started: tuple[QueueRef, int]) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(
        changed=pb.SubscriptionsChanged(
            started=[
                pb.SubscriptionStarted(topic=r.topic, lite_topic=r.lite_topic, next_offset=o)
                for r, o in started
            ]
        )
    )


def offsets(messages: list[Message]) -> list[tuple[str, int]]:
    return [(m.lite_topic, m.offset) for m in messages]


def credits_sent(state: SessionState) -> int:
    return sum(r.credits for r in state.take_requests())


def test_open_request_holds_every_subscription_and_the_window() -> None:
    state = SessionState(window=100)
    state.add([S1, S2], Start.earliest())
    request = state.open_request()
    assert [(a.topic, a.lite_topic, a.start.kind) for a in request.add] == [
        ("chat", "s-1", pb.StartPosition.EARLIEST),
        ("chat", "s-2", pb.StartPosition.EARLIEST),
    ]
    assert request.credits == 100
    assert not request.open.group


def test_resume_starts_after_the_last_offset_handed_over_and_drops_duplicates() -> None:
    state = SessionState(window=100)
    state.add([S1, S2], Start.earliest())
    state.open_request()
    state.feed(changed((S1, 0), (S2, 0)))
    got = state.feed(frame(delivery(S1, 0), delivery(S1, 1), delivery(S2, 0)))
    assert offsets(got) == [("s-1", 0), ("s-1", 1), ("s-2", 0)]
    state.lost()
    again = state.open_request()
    starts = {(a.lite_topic, a.start.kind, a.start.offset) for a in again.add}
    assert starts == {("s-1", pb.StartPosition.OFFSET, 2), ("s-2", pb.StartPosition.OFFSET, 1)}
    state.feed(changed((S1, 2), (S2, 1)))
    # A server that sends an old offset again: dropped, counted.
    got = state.feed(frame(delivery(S1, 1), delivery(S1, 2), delivery(S2, 1)))
    assert offsets(got) == [("s-1", 2), ("s-2", 1)]
    assert state.duplicates == 1


def test_positions_follow_what_the_user_took_not_what_is_buffered() -> None:
    state = SessionState(window=100)
    state.add([S1, S2], Start.earliest())
    state.open_request()
    got = state.feed(frame(delivery(S1, 0), delivery(S1, 1), delivery(S2, 0)))
    assert state.positions() == {}
    state.taken(got[0])
    assert state.positions() == {S1: 1}
    state.taken(got[1])
    state.taken(got[2])
    assert state.positions() == {S1: 2, S2: 1}


def test_a_subscription_never_confirmed_resumes_from_its_own_start() -> None:
    state = SessionState()
    state.add([S1], Start.latest())
    state.open_request()
    state.lost()  # the stream died before the server answered
    request = state.open_request()
    assert request.add[0].start.kind == pb.StartPosition.LATEST


def test_a_confirmed_latest_start_resumes_at_the_offset_the_server_named() -> None:
    state = SessionState()
    state.add([S1], Start.latest())
    state.open_request()
    state.feed(changed((S1, 7)))
    state.lost()
    request = state.open_request()
    assert (request.add[0].start.kind, request.add[0].start.offset) == (
        pb.StartPosition.OFFSET,
        7,
    )


def test_credits_keep_buffered_plus_outstanding_within_the_window() -> None:
    state = SessionState(window=8)
    state.add([S1], Start.earliest())
    assert state.open_request().credits == 8
    state.feed(changed((S1, 0)))
    got = state.feed(frame(*[delivery(S1, i) for i in range(8)]))
    assert len(got) == 8
    assert (state.buffered, state.outstanding) == (8, 0)
    assert credits_sent(state) == 0  # the reader has taken nothing: no room
    state.taken(got[0])
    assert credits_sent(state) == 0  # below a quarter of the window
    state.taken(got[1])
    assert credits_sent(state) == 2
    assert state.buffered + state.outstanding == 8


def test_a_new_stream_grants_only_the_room_left_in_the_buffer() -> None:
    state = SessionState(window=10)
    state.add([S1], Start.earliest())
    state.open_request()
    state.feed(frame(*[delivery(S1, i) for i in range(6)]))
    state.lost()
    assert state.open_request().credits == 4


def test_dropped_duplicates_give_their_credits_back() -> None:
    state = SessionState(window=4)
    state.add([S1], Start.at(5))
    state.open_request()
    state.feed(changed((S1, 5)))
    state.take_requests()
    got = state.feed(frame(delivery(S1, 3), delivery(S1, 4), delivery(S1, 5)))
    assert offsets(got) == [("s-1", 5)]
    # Three credits used, one message buffered: 4 - 1 buffered - 1 outstanding = 2 back.
    assert credits_sent(state) == 2
    assert (state.buffered, state.outstanding) == (1, 3)


def test_a_chunked_body_is_assembled_and_counts_only_once_complete() -> None:
    state = SessionState()
    state.add([S1], Start.earliest())
    state.open_request()
    state.feed(changed((S1, 0)))
    head = pb.Delivery(topic="chat", lite_topic="s-1", offset=0, chunked=True, size=6)
    assert state.feed(frame(head)) == []
    assert state.feed(pb.SubscribeResponse(body_chunk=pb.BodyChunk(data=b"abc"))) == []
    assert state.buffered == 0
    (done,) = state.feed(pb.SubscribeResponse(body_chunk=pb.BodyChunk(data=b"def", last=True)))
    assert (done.body, done.size, done.chunked, done.complete) == (b"abcdef", 6, True, True)
    assert state.buffered == 1
    state.lost()
    assert state.open_request().add[0].start.offset == 1


def test_a_stream_cut_inside_a_chunked_body_resumes_at_that_message() -> None:
    state = SessionState()
    state.add([S1], Start.earliest())
    state.open_request()
    state.feed(changed((S1, 0)))
    state.feed(frame(pb.Delivery(topic="chat", lite_topic="s-1", offset=0, chunked=True, size=9)))
    state.feed(pb.SubscribeResponse(body_chunk=pb.BodyChunk(data=b"abc")))
    state.lost()
    request = state.open_request()
    assert request.add[0].start.offset == 0
    # A stray piece of the old body on the new stream is ignored.
    assert state.feed(pb.SubscribeResponse(body_chunk=pb.BodyChunk(data=b"x", last=True))) == []


def test_messages_of_a_removed_lite_topic_are_dropped() -> None:
    state = SessionState()
    state.add([S1, S2], Start.earliest())
    state.open_request()
    state.remove([S2])
    removal = state.take_requests()
    assert [(r.topic, r.lite_topic) for r in removal[0].remove] == [("chat", "s-2")]
    got = state.feed(frame(delivery(S1, 0), delivery(S2, 0)))
    assert offsets(got) == [("s-1", 0)]
    assert state.subscriptions() == (S1,)


def test_changes_are_confirmed_in_order() -> None:
    state = SessionState()
    first = state.add([S1], Start.earliest())
    state.open_request()
    second = state.add([S2], Start.latest())
    third = state.remove([S1])
    assert [len(r.add) + len(r.remove) for r in state.take_requests()] == [1, 1]
    assert state.confirmed == 0
    state.feed(changed((S1, 0)))
    assert state.confirmed == first
    state.feed(changed((S2, 4)))
    assert state.confirmed == second
    state.feed(changed())
    assert state.confirmed == third
    assert state.add([], Start.earliest()) == 0


def test_a_new_stream_confirms_every_change_made_so_far() -> None:
    state = SessionState()
    state.add([S1], Start.earliest())
    state.open_request()
    state.lost()
    change = state.add([S2], Start.earliest())  # while disconnected: nothing sent
    assert state.take_requests() == []
    request = state.open_request()
    assert len(request.add) == 2
    state.feed(changed((S1, 0), (S2, 0)))
    assert state.confirmed == change


def test_removing_everything_while_disconnected_is_confirmed_by_the_new_stream() -> None:
    state = SessionState()
    state.add([S1], Start.earliest())
    state.open_request()
    state.lost()
    change = state.remove([S1])
    request = state.open_request()
    assert not request.add
    assert state.confirmed == change


def test_a_group_passes_redeliveries_and_resumes_from_its_committed_position() -> None:
    state = SessionState(group="workers", lease_s=5, max_batch=10)
    state.add([S1], Start.default())
    request = state.open_request()
    assert (request.open.group, request.open.lease_s, request.open.max_batch_messages) == (
        "workers",
        5,
        10,
    )
    state.feed(changed((S1, 0)))
    first = state.feed(frame(delivery(S1, 0, attempt=1)))
    again = state.feed(frame(delivery(S1, 0, attempt=2)))
    assert [m.attempt for m in first + again] == [1, 2]
    state.lost()
    assert state.open_request().add[0].start.kind == pb.StartPosition.DEFAULT


def test_acks_go_out_by_queue_and_wait_for_a_stream_when_disconnected() -> None:
    state = SessionState(group="g")
    state.add([S1, S2], Start.earliest())
    state.open_request()
    got = state.feed(frame(delivery(S1, 0), delivery(S1, 1), delivery(S2, 0)))
    state.take_requests()
    state.settle("ack", got[:2])
    (ack,) = state.take_requests()
    assert [(s.lite_topic, list(s.offsets)) for s in ack.ack] == [("s-1", [0, 1])]
    state.lost()
    state.settle("nack", got[2:])
    state.extend([S2], 9.0)
    request = state.open_request()
    assert [(s.lite_topic, list(s.offsets)) for s in request.nack] == [("s-2", [0])]
    assert [(e.lite_topic, e.lease_s) for e in request.extend] == [("s-2", 9.0)]


def test_a_plain_stream_sends_no_acks() -> None:
    state = SessionState()
    state.add([S1], Start.earliest())
    state.open_request()
    got = state.feed(frame(delivery(S1, 0)))
    state.take_requests()
    state.settle("ack", got)
    assert state.take_requests() == []


def test_notices_become_values() -> None:
    state = SessionState(group="g")
    state.open_request()
    state.feed(
        pb.SubscribeResponse(
            notice=pb.StreamNotice(
                code=9, message="offset 99 is not in flight", topic="chat", lite_topic="s-1"
            )
        )
    )
    (notice,) = state.notices
    assert (notice.code, notice.ref) == ("FAILED_PRECONDITION", S1)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"group": "bad group"}, "group"),
        ({"lease_s": 0.0}, "lease_s"),
        ({"max_batch": 5000}, "max_batch"),
        ({"max_lease": 0}, "max_lease"),
        ({"max_lease": 1001}, "max_lease"),
        ({"window": 0}, "buffer"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: dict[str, object], word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        SessionState(**kwargs)  # type: ignore[arg-type]


def run(ref: QueueRef, *offsets_: int, attempts: list[int] | None = None) -> pb.DeliveryRun:
    return pb.DeliveryRun(
        topic=ref.topic,
        lite_topic=ref.lite_topic,
        offsets=offsets_,
        timestamps=[float(o) for o in offsets_],
        bodies=[b"%d" % o for o in offsets_],
        attempts=attempts or [],
        lease_deadline=9.0 if attempts else 0.0,
    )


def test_the_stream_asks_for_runs_and_the_lease_size() -> None:
    state = SessionState(window=10)
    state.add([S1], Start.earliest())
    opened = state.open_request().open
    assert opened.compact
    assert opened.max_lease_messages == 0  # the server's default: max_batch
    state = SessionState(group="g", max_batch=100, max_lease=1000)
    assert state.open_request().open.max_lease_messages == 1000


def test_runs_come_after_the_frame_s_deliveries_as_the_same_messages() -> None:
    state = SessionState(window=100)
    state.add([S1, S2], Start.earliest())
    state.open_request()
    state.feed(changed((S1, 0), (S2, 0)))
    got = state.feed(pb.SubscribeResponse(messages=[delivery(S2, 0)], runs=[run(S1, 0, 1, 2)]))
    assert offsets(got) == [("s-2", 0), ("s-1", 0), ("s-1", 1), ("s-1", 2)]
    assert got[1] == Message("chat", "s-1", 0, b"0", timestamp=0.0, size=1)
    # Resume and duplicates work on runs as on deliveries.
    state.lost()
    again = state.open_request()
    assert {(a.lite_topic, a.start.offset) for a in again.add} == {("s-1", 3), ("s-2", 1)}
    state.feed(changed((S1, 3), (S2, 1)))
    got = state.feed(pb.SubscribeResponse(runs=[run(S1, 1, 2, 3, 4), run(S2, 0)]))
    assert offsets(got) == [("s-1", 3), ("s-1", 4)]
    assert state.duplicates == 3


def test_a_group_s_run_carries_attempts_and_the_lease() -> None:
    state = SessionState(window=100, group="g")
    state.add([S1], Start.earliest())
    state.open_request()
    got = state.feed(pb.SubscribeResponse(runs=[run(S1, 5, 6, attempts=[1, 2])]))
    assert [(m.offset, m.attempt, m.lease_deadline) for m in got] == [(5, 1, 9.0), (6, 2, 9.0)]
    state.remove([S1])
    assert state.feed(pb.SubscribeResponse(runs=[run(S1, 7, attempts=[1])])) == []
