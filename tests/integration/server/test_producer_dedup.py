"""Idempotent producers through a real server: restarts and the PublishStream path.

A producer's last batch keeps its original results across a stop or a kill
of the server (the journal entry names where its messages went, and the
server finds them in their queues again); older duplicates after a restart
are still refused, only without their offsets. PublishStream deduplicates by
the producer id and sequence of its ``open`` frame like Publish does.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from broker.proto import broker_pb2 as pb
from tests.integration.server.conftest import Client, Server

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def msg(topic: str, lites: list[str], body: bytes) -> pb.OutboundMessage:
    return pb.OutboundMessage(topic=topic, lite_topics=lites, body=body)


def bodies(client: Client, topic: str, lite: str = "") -> list[bytes]:
    read = client.Read(pb.ReadRequest(topic=topic, lite_topic=lite, max_messages=1000))
    return [m.body for m in read.messages]


def outcome(response: pb.PublishResponse) -> list[tuple[list[int], float, bool, int]]:
    return [(list(r.offsets), r.timestamp, r.duplicate, r.sequence) for r in response.results]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_last_batch_keeps_its_offsets_across_a_restart(server: Server, sig: int) -> None:
    client = server.stub("acme")
    older = [msg("idem", ["a"], b"old-%d" % i) for i in range(3)]
    client.Publish(pb.PublishRequest(messages=older, producer_id="p-1", sequence=0))
    # The last batch: runs to one lite-topic, a message to two, one to the
    # parent queue; then another producer writes after it to the same queues,
    # so the batch is no longer at their ends.
    last = [
        msg("idem", ["a"], b"l-0"),
        msg("idem", ["a"], b"l-1"),
        msg("idem", ["b", "a"], b"l-2"),
        msg("idem", [], b"l-3"),
        msg("idem", ["b"], b"l-4"),
    ]
    first = client.Publish(pb.PublishRequest(messages=last, producer_id="p-1", sequence=3))
    for i in range(40):
        later = [msg("idem", ["a"], b"o-%d" % i), msg("idem", ["b"], b"o-%d" % i)]
        client.Publish(pb.PublishRequest(messages=later, producer_id="p-2", sequence=2 * i))
    # Offsets follow each message's lite_topics order ("b" then "a" for l-2).
    assert [list(r.offsets) for r in first.results] == [[3], [4], [0, 5], [0], [1]]
    assert not any(r.duplicate for r in first.results)

    assert server.stop(sig) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    server.start()
    client = server.stub("acme")

    again = client.Publish(pb.PublishRequest(messages=last, producer_id="p-1", sequence=3))
    assert outcome(again) == [(o, t, True, s) for o, t, _, s in outcome(first)]
    # Older than the last batch: still a duplicate, its result no longer known.
    old = client.Publish(pb.PublishRequest(messages=older, producer_id="p-1", sequence=0))
    assert [(list(r.offsets), r.duplicate) for r in old.results] == [([], True)] * 3
    # Nothing was stored twice, and the producer goes on after its last sequence.
    assert bodies(client, "idem", "a")[:6] == [b"old-0", b"old-1", b"old-2", b"l-0", b"l-1", b"l-2"]
    assert len(bodies(client, "idem", "a")) == 6 + 40
    assert bodies(client, "idem", "b")[:2] == [b"l-2", b"l-4"]
    assert bodies(client, "idem") == [b"l-3"]
    more = client.Publish(
        pb.PublishRequest(messages=[msg("idem", ["a"], b"next")], producer_id="p-1", sequence=8)
    )
    assert outcome(more)[0][::2] == ([46], False)


def test_a_partly_resent_last_batch_after_a_kill_gets_old_and_new_results(server: Server) -> None:
    client = server.stub("acme")
    batch = [msg("part", ["a"], b"%d" % i) for i in range(4)]
    first = client.Publish(pb.PublishRequest(messages=batch, producer_id="p", sequence=10))
    server.stop(signal.SIGKILL)
    server.start()
    client = server.stub("acme")
    # A retry that starts inside the last batch and carries two new messages.
    retry = [*batch[2:], msg("part", ["a"], b"4"), msg("part", ["a"], b"5")]
    again = client.Publish(pb.PublishRequest(messages=retry, producer_id="p", sequence=12))
    assert [(list(r.offsets), r.duplicate) for r in again.results] == [
        ([2], True),
        ([3], True),
        ([4], False),
        ([5], False),
    ]
    assert [r.timestamp for r in again.results[:2]] == [r.timestamp for r in first.results[2:]]
    assert bodies(client, "part", "a") == [b"%d" % i for i in range(6)]


def stream(
    producer: str, sequence: int, messages: list[tuple[str, bytes]]
) -> Iterator[pb.PublishFrame]:
    yield pb.PublishFrame(open=pb.PublishOpen(producer_id=producer, sequence=sequence))
    for lite, body in messages:
        if len(body) <= MiB:
            yield pb.PublishFrame(message=msg("streamed", [lite], body))
            continue
        yield pb.PublishFrame(message=msg("streamed", [lite], body[:MiB]))
        for at in range(MiB, len(body), MiB):
            yield pb.PublishFrame(body=body[at : at + MiB])


def test_a_resent_publish_stream_is_stored_once(server: Server) -> None:
    client = server.stub("acme")
    big = bytes(range(256)) * (3 * MiB // 256)  # streamed in chunk records, not gathered
    messages = [("s", b"0"), ("s", b"1"), ("t", big), ("s", b"3"), ("t", b"4")]
    # The answer to the first try is lost: the producer cannot tell what was
    # stored, so it sends the whole stream again under the same sequence.
    lost = client.PublishStream(stream("streamer", 100, messages))
    again = client.PublishStream(stream("streamer", 100, messages))
    assert [(list(r.offsets), r.duplicate, r.sequence) for r in again.results] == [
        ([0], True, 100),
        ([1], True, 101),
        ([0], True, 102),
        ([2], True, 103),
        ([1], True, 104),
    ]
    assert outcome(again) == [(o, t, True, s) for o, t, _, s in outcome(lost)]
    assert bodies(client, "streamed", "s") == [b"0", b"1", b"3"]
    read = client.Read(pb.ReadRequest(topic="streamed", lite_topic="t", max_messages=10))
    assert [(m.offset, m.size) for m in read.messages] == [(0, len(big)), (1, 1)]


def test_a_cut_publish_stream_resent_whole_after_a_kill_stores_only_the_rest(
    server: Server,
) -> None:
    client = server.stub("acme")
    messages = [("s", b"%d" % i) for i in range(6)]
    cut = client.PublishStream(stream("cutter", 0, messages[:3]))  # the stream broke here
    server.stop(signal.SIGKILL)
    server.start()
    client = server.stub("acme")
    whole = client.PublishStream(stream("cutter", 0, messages))
    assert [(list(r.offsets), r.duplicate) for r in whole.results] == [
        ([0], True),
        ([1], True),
        ([2], True),
        ([3], False),
        ([4], False),
        ([5], False),
    ]
    assert [r.timestamp for r in whole.results[:3]] == [r.timestamp for r in cut.results]
    assert bodies(client, "streamed", "s") == [b"%d" % i for i in range(6)]
