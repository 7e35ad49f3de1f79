"""Both clients send a batch for one destination in the compact form, and anything
else per message, against a real server; the caller gets the same results."""

from __future__ import annotations

import asyncio

import pytest

from broker.proto import broker_pb2 as pb
from tests.integration.sdk.conftest import KEYS, RETRY, Server, make_client
from tidegate import AsyncClient, Client, Outgoing, PublishResult, compact

pytestmark = pytest.mark.integration


@pytest.fixture
def forms(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The form of every unary Publish the clients send, in order."""
    sent: list[str] = []
    real = compact.publish_request

    def spy(messages: list[Outgoing], producer_id: str, sequence: int) -> pb.PublishRequest:
        request = real(messages, producer_id, sequence)
        sent.append("batch" if request.HasField("batch") else "messages")
        return request

    monkeypatch.setattr(compact, "publish_request", spy)
    return sent


def without_time(results: list[PublishResult]) -> list[tuple[object, ...]]:
    return [(r.topic, r.lite_topics, r.offsets, r.duplicate, r.sequence, r.size) for r in results]


def test_one_destination_goes_compact_and_answers_as_per_message(
    server: Server, forms: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = [Outgoing("same", b"body-%d" % i, ("a", "b")) for i in range(6)]
    with make_client(server, producer_id="cmp", first_sequence=50) as client:
        client.publish_batch([Outgoing("same", b"before", ("b",))])
        got = client.publish_batch(batch)
        assert forms == ["messages", "batch"]
        # The very same batch sent per message, to a twin queue pair.
        monkeypatch.setattr(compact, "compact_request", lambda *_: None)
        client.publish_batch([Outgoing("twin", b"before", ("b",))])
        twin = client.publish_batch([Outgoing("twin", m.body, m.lite_topics) for m in batch])
        assert forms[2:] == ["messages", "messages"]
        read = client.read("same", "b")
    assert all(type(r) is PublishResult for r in got)
    assert [r.offsets for r in got] == [(i, 1 + i) for i in range(6)]
    assert [r.sequence for r in got] == list(range(51, 57))
    assert len({r.timestamp for r in got}) == 1
    assert [(t[0], *t[2:4], t[5]) for t in without_time(got)] == [
        ("same", *t[2:4], t[5]) for t in without_time(twin)
    ]
    assert [r.lite_topics for r in got] == [("a", "b")] * 6
    assert [m.body for m in read.messages] == [b"before", *(m.body for m in batch)]


def test_a_batch_that_does_not_fit_goes_per_message(server: Server, forms: list[str]) -> None:
    with make_client(server) as client:
        client.publish_batch([Outgoing("fit", b"one", ("a",))])  # a single message
        client.publish_batch([Outgoing("fit", b"1", ("a",)), Outgoing("fit", b"2", ("b",))])
        client.publish_batch([Outgoing("fit", b"1", ("a",)), Outgoing("other", b"2", ("a",))])
        client.publish_batch(
            [Outgoing("fit", b"1", ("a",)), Outgoing("fit", b"2", ("a",), {"k": "v"})]
        )
        client.publish_batch(
            [Outgoing("fit", b"1", ("a",)), Outgoing("fit", b"2", ("a",), reply_to="fit/r")]
        )
        client.publish_batch([Outgoing("fit", b"%d" % i) for i in range(3)])  # parent queue
        results = client.publish_batch([Outgoing("fit", b"x%d" % i, ("a",)) for i in range(2500)])
        read = client.read("fit", "a", from_offset=7, max_messages=3000)
    assert forms == ["messages"] * 5 + ["batch"] + ["batch"] * 3  # 1000 + 1000 + 500
    assert [r.offset for r in results] == list(range(7, 2507))
    assert [m.body for m in read.messages] == [b"x%d" % i for i in range(2500)]


def test_a_resent_compact_batch_comes_back_as_duplicates(server: Server, forms: list[str]) -> None:
    batch = [Outgoing("again", b"%d" % i, ("a",)) for i in range(5)]
    with make_client(server, producer_id="resend", first_sequence=10) as first:
        stored = first.publish_batch(batch)
    # A process that lost the answer starts again at the same place, one message further.
    with make_client(server, producer_id="resend", first_sequence=12) as again:
        resent = again.publish_batch([*batch[2:], Outgoing("again", b"5", ("a",))])
    assert forms == ["batch", "batch"]
    assert [(r.offsets, r.duplicate, r.sequence) for r in resent] == [
        ((2,), True, 12),
        ((3,), True, 13),
        ((4,), True, 14),
        ((5,), False, 15),
    ]
    assert [r.timestamp for r in resent[:3]] == [r.timestamp for r in stored[2:]]
    assert [r.size for r in resent] == [1, 1, 1, 1]


def test_the_async_client_sends_the_same_forms(server: Server, forms: list[str]) -> None:
    async def main() -> tuple[list[PublishResult], list[PublishResult]]:
        async with AsyncClient(
            server.address, api_key=KEYS["acme"], retry=RETRY, producer_id="aio", first_sequence=1
        ) as client:
            same = await client.publish_batch(
                [Outgoing("aio", b"%d" % i, ("a",)) for i in range(4)]
            )
            mixed = await client.publish_batch(
                [Outgoing("aio", b"p", ("a",), {"k": "v"}), Outgoing("aio", b"q", ("a",))]
            )
            return same, mixed

    same, mixed = asyncio.run(main())
    assert forms == ["batch", "messages"]
    assert [(r.offsets, r.sequence, r.duplicate) for r in same] == [
        ((i,), 1 + i, False) for i in range(4)
    ]
    assert [r.offsets for r in mixed] == [(4,), (5,)]
    assert isinstance(same[0], PublishResult)


def test_the_sync_client_type_is_unchanged(client: Client) -> None:
    results = client.publish_batch(
        [Outgoing("plain", b"a", ("x",)), Outgoing("plain", b"b", ("x",))]
    )
    assert [(r.offset, r.duplicate, r.size) for r in results] == [(0, False, 1), (1, False, 1)]
