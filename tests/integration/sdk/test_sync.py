"""The sync SDK against a real server: round trips, lite-topics on the fly, groups,
request-reply, idempotent retries and the error classes."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

import tidegate
from tests.integration.sdk.conftest import KEYS, RETRY, Server, make_client
from tidegate import Client, Message, Outgoing, QueueRef, Retry, Start

pytestmark = pytest.mark.integration


def test_publish_and_subscribe_across_many_lite_topics(client: Client) -> None:
    lites = [f"s-{i}" for i in range(1000)]
    client.publish_batch([Outgoing("chat", f"{x}:0".encode(), (x,)) for x in lites])
    with client.subscribe("chat", lites, start=Start.earliest(), buffer=256) as sub:
        for round_ in (1, 2):
            client.publish_batch([Outgoing("chat", f"{x}:{round_}".encode(), (x,)) for x in lites])
        seen: dict[str, list[int]] = defaultdict(list)
        for _ in range(3 * len(lites)):
            message = sub.get(timeout=10)
            assert message is not None
            assert message.body == f"{message.lite_topic}:{message.offset}".encode()
            seen[message.lite_topic].append(message.offset)
        assert dict(seen) == {x: [0, 1, 2] for x in lites}
        assert sub.get(timeout=0.2) is None
        assert sub.positions() == {QueueRef("chat", x): 3 for x in lites}


def test_the_buffer_bounds_what_the_server_sends(client: Client) -> None:
    client.publish_batch([Outgoing("slow", b"%d" % i, ("x",)) for i in range(50)])
    with client.subscribe("slow", ["x"], start=Start.earliest(), buffer=5) as sub:
        deadline = time.monotonic() + 10
        while sub.buffered < 5:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.3)  # a reader that does not read: nothing more arrives
        assert sub.buffered == 5
        got = [sub.get(timeout=10) for _ in range(50)]
        assert [m.body for m in got if m] == [b"%d" % i for i in range(50)]


def test_lite_topics_come_and_go_on_the_fly(client: Client) -> None:
    with client.subscribe("live", ["a"], start=Start.latest()) as sub:
        client.publish("live", b"a0", lite="a")
        sub.add("live", ["b", "c"], start=Start.latest())
        client.publish("live", b"b0", lite="b")
        client.publish("live", b"c0", lite="c")
        got = sorted(m.body for m in (sub.get(timeout=10) for _ in range(3)) if m)
        assert got == [b"a0", b"b0", b"c0"]
        sub.remove("live", ["a", "b"])
        assert sub.subscriptions == (QueueRef("live", "c"),)
        client.publish("live", b"a1", lite="a")
        client.publish("live", b"b1", lite="b")
        client.publish("live", b"c1", lite="c")
        message = sub.get(timeout=10)
        assert message is not None
        assert message.body == b"c1"
        assert sub.get(timeout=0.3) is None


def test_a_subscription_resumes_in_a_new_client_from_its_positions(server: Server) -> None:
    with make_client(server) as first:
        first.publish_batch([Outgoing("r", b"%d" % i, ("s",)) for i in range(10)])
        with first.subscribe("r", ["s"], start=Start.earliest()) as sub:
            seen = [sub.get(timeout=10) for _ in range(4)]
            positions = sub.positions()
    assert [m.offset for m in seen if m] == [0, 1, 2, 3]
    with make_client(server) as second:
        start = Start.at(positions[QueueRef("r", "s")])
        with second.subscribe("r", ["s"], start=start) as sub:
            rest = [sub.get(timeout=10) for _ in range(6)]
            assert sub.get(timeout=0.2) is None
    assert [m.body for m in rest if m] == [b"%d" % i for i in range(4, 10)]


def test_a_group_redelivers_a_nacked_message_with_its_attempt(client: Client) -> None:
    client.publish("jobs", b"job", lite="q")
    with client.subscribe("jobs", ["q"], group="workers", lease_s=30) as sub:
        first = sub.get(timeout=10)
        assert first is not None
        assert (first.offset, first.attempt) == (0, 1)
        assert first.lease_deadline is not None
        sub.nack(first)
        again = sub.get(timeout=10)
        assert again is not None
        assert (again.offset, again.attempt) == (0, 2)
        sub.ack(again)
    info = client.queue_info("jobs", "q", group="workers")
    assert info.committed_offset == 1


def test_a_stray_ack_comes_back_as_a_notice_and_the_stream_goes_on(client: Client) -> None:
    notices: list[tidegate.Notice] = []
    client.publish("n", b"1", lite="x")
    with client.subscribe("n", ["x"], group="gg", on_notice=notices.append) as sub:
        first = sub.get(timeout=10)
        assert first is not None
        sub.ack(Message("n", "x", 99, b""))  # never delivered: not in flight
        sub.ack(first)
        client.publish("n", b"2", lite="x")
        second = sub.get(timeout=10)
        assert second is not None
        assert second.body == b"2"
    assert [(n.code, n.ref) for n in notices] == [("FAILED_PRECONDITION", QueueRef("n", "x"))]
    assert "99" in notices[0].message


def test_request_reply_through_a2a(server: Server, client: Client) -> None:
    stop = threading.Event()
    replied: list[str] = []

    def responder() -> None:
        with (
            make_client(server) as agent,
            agent.subscribe("agent", ["inbox"], start=Start.earliest()) as inbox,
        ):
            while not stop.is_set():
                request = inbox.get(timeout=0.1)
                if request is not None:
                    replied.append(request.reply_to)
                    agent.reply(request, b"answer to " + request.body)

    thread = threading.Thread(target=responder)
    thread.start()
    try:
        answer = client.request("agent", b"q1", lite="inbox", task_id="task-1", timeout_s=20)
        assert answer.body == b"answer to q1"
        assert (answer.topic, answer.lite_topic) == ("a2a", "task-1")
        assert replied == ["a2a/task-1"]
        second = client.request("agent", b"q2", lite="inbox", timeout_s=20)
        assert second.body == b"answer to q2"
    finally:
        stop.set()
        thread.join(10)


def test_a_request_nobody_answers_times_out(client: Client) -> None:
    with pytest.raises(tidegate.DeadlineExceeded, match="a2a/lonely"):
        client.request("nobody", b"?", lite="home", task_id="lonely", timeout_s=0.3)


def test_a_retried_publish_with_the_same_producer_sequence_is_stored_once(
    server: Server,
) -> None:
    batch = [Outgoing("idem", b"%d" % i, ("a",)) for i in range(5)]
    with make_client(server, producer_id="billing", first_sequence=100) as first:
        stored = first.publish_batch(batch)
    # A process that crashed before it saw the answer starts again at the same place.
    with make_client(server, producer_id="billing", first_sequence=100) as again:
        retried = again.publish_batch(batch)
        later = again.publish("idem", b"5", lite="a")
        read = again.read("idem", "a")
    assert [r.offsets for r in stored] == [(i,) for i in range(5)]
    assert all(r.duplicate for r in retried)
    assert (later.duplicate, later.offset, later.sequence) == (False, 5, 105)
    assert [m.body for m in read.messages] == [b"%d" % i for i in range(6)]


def test_concurrent_publishers_on_one_client_lose_nothing(client: Client) -> None:
    def publish(worker: int) -> None:
        for i in range(20):
            client.publish("many", f"{worker}:{i}".encode(), lite=f"w-{worker}")

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for worker in range(4):
        read = client.read("many", f"w-{worker}")
        assert [m.body for m in read.messages] == [f"{worker}:{i}".encode() for i in range(20)]


# --------------------------------------------------------------------- errors


def test_an_unknown_key_is_unauthenticated_and_never_quoted(server: Server) -> None:
    with Client(server.address, api_key="not-a-real-key", retry=RETRY) as client:
        with pytest.raises(tidegate.Unauthenticated) as info:
            client.publish("t", b"x")
        assert "not-a-real-key" not in str(info.value)
        with pytest.raises(tidegate.Unauthenticated):
            client.subscribe("t", ["x"])


def test_acting_as_another_tenant_is_permission_denied(server: Server) -> None:
    with (
        Client(server.address, api_key=KEYS["acme"], tenant="beta", retry=RETRY) as client,
        pytest.raises(tidegate.PermissionDenied),
    ):
        client.status()


def test_server_side_rules_are_invalid_argument_naming_the_field(client: Client) -> None:
    with pytest.raises(tidegate.InvalidArgument, match=r"properties\['tidegate.x'\]"):
        client.publish("t", b"x", lite="y", properties={"tidegate.x": "1"})


def test_local_rules_fail_before_sending(client: Client) -> None:
    with pytest.raises(tidegate.InvalidArgument, match="lite-topic name rule"):
        client.publish("t", b"x", lite="no spaces")
    with pytest.raises(tidegate.InvalidArgument, match="topic name rule"):
        client.subscribe("bad/topic", ["x"])
    with pytest.raises(tidegate.InvalidArgument, match="without a topic"):
        client.subscribe(lites=["x"])


def test_a_missing_message_is_not_found(client: Client) -> None:
    client.publish("nf", b"x", lite="y")
    with pytest.raises(tidegate.NotFound, match="offset 9"):
        list(client.read_body("nf", "y", 9))


def test_tenant_limits_are_resource_exhausted_naming_the_limit(server: Server) -> None:
    with (
        make_client(server, tenant="tiny") as client,
        pytest.raises(tidegate.ResourceExhausted, match="max_subscriptions"),
    ):
        client.subscribe("t", ["a", "b", "c"])


def test_an_unreachable_server_is_unavailable_after_the_retry_budget() -> None:
    quick = Retry(initial_s=0.02, max_s=0.1, give_up_s=0.3)
    with Client("127.0.0.1:1", api_key="k", retry=quick) as client:
        with pytest.raises(tidegate.Unavailable, match=r"127\.0\.0\.1:1"):
            client.publish("t", b"x")
        with pytest.raises(tidegate.Unavailable):
            client.subscribe("t", ["x"])


def test_a_closed_client_refuses_calls(server: Server) -> None:
    client = make_client(server)
    sub = client.subscribe("t", ["x"], start=Start.latest())
    client.close()
    with pytest.raises(tidegate.ClientClosed):
        client.publish("t", b"x")
    with pytest.raises(tidegate.ClientClosed):
        sub.get(timeout=0.1)
    assert list(sub) == []
