"""The compact Publish (``PublishRequest.batch``) through a real server.

One destination, many bodies, answered by the first offset in each queue:
offsets, multi-lite-topic dispatch, producer deduplication (a full and a
partial resend), every validation error naming the batch's field, and both
forms mixed across calls, where the compact answer must say exactly what
the per-message answer says.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import pytest

from broker.proto import broker_pb2 as pb
from tests.integration.server.conftest import CONFIG, KEYS, Client, Server

pytestmark = pytest.mark.integration
S = grpc.StatusCode

LIMIT = 4096  # the server's max_message_bytes here
MAX_LITES = 3  # and its max_lite_topics (per message)


@dataclass
class SmallServer(Server):
    """The suite's server with small message limits, so that they can be hit."""

    def start(self) -> SmallServer:
        (self.directory / "tiny.key").write_text(KEYS["tiny"] + "\n")
        config = CONFIG.format(fsync=self.fsync).replace(
            "broker:\n",
            f"broker:\n  max_message_bytes: {LIMIT}\n  max_lite_topics: {MAX_LITES}\n",
        )
        self.launch(
            config,
            {"TG_TEST_ACME": KEYS["acme"], "TG_TEST_BETA": KEYS["beta"]},
            port=self.port,
        )
        return self


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallServer]:
    directory: Path = tmp_path_factory.mktemp("batch")
    server = SmallServer(directory).start()
    yield server
    server.kill()


def batch(
    topic: str,
    lites: list[str],
    bodies: list[bytes],
    producer: str = "",
    sequence: int = 0,
) -> pb.PublishRequest:
    return pb.PublishRequest(
        batch=pb.PublishBatch(topic=topic, lite_topics=lites, bodies=bodies),
        producer_id=producer,
        sequence=sequence,
    )


def messages(
    topic: str,
    lites: list[str],
    bodies: list[bytes],
    producer: str = "",
    sequence: int = 0,
) -> pb.PublishRequest:
    return pb.PublishRequest(
        messages=[pb.OutboundMessage(topic=topic, lite_topics=lites, body=b) for b in bodies],
        producer_id=producer,
        sequence=sequence,
    )


def read(client: Client, topic: str, lite: str = "") -> list[tuple[int, bytes]]:
    """The queue's messages (none when nothing ever made the queue)."""
    try:
        found = client.Read(pb.ReadRequest(topic=topic, lite_topic=lite, max_messages=1000))
    except grpc.RpcError as exc:
        if cast(grpc.Call, exc).code() is S.NOT_FOUND:
            return []
        raise
    return [(m.offset, m.body) for m in found.messages]


Result = tuple[tuple[int, ...], bool, int, int]  # offsets, duplicate, sequence, size


def expanded(
    request: pb.PublishRequest, response: pb.PublishResponse
) -> tuple[list[Result], float]:
    """A compact answer as per-message results (what a messages request gets), and
    the stored messages' timestamp."""
    assert response.HasField("batch")
    answer = response.batch
    sent = request.batch
    assert answer.duplicates == len(response.results)
    assert answer.duplicates + answer.stored == len(sent.bodies)
    out: list[Result] = [
        (tuple(r.offsets), r.duplicate, r.sequence, r.size) for r in response.results
    ]
    for r in response.results:
        assert (r.topic, list(r.lite_topics)) == (sent.topic, list(sent.lite_topics))
    for k in range(answer.stored):
        body = sent.bodies[answer.duplicates + k]
        sequence = answer.first_sequence + k if request.producer_id else 0
        offsets = tuple(first + k for first in answer.first_offsets)
        out.append((offsets, False, sequence, len(body)))
    return out, answer.timestamp


def per_message(response: pb.PublishResponse) -> list[Result]:
    return [(tuple(r.offsets), r.duplicate, r.sequence, r.size) for r in response.results]


def refused(client: Client, request: pb.PublishRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        client.Publish(request)
    call = cast(grpc.Call, info.value)
    return call.code(), call.details() or ""


# ---------------------------------------------------------------- round trip


def test_a_batch_round_trips_with_contiguous_offsets(small: SmallServer) -> None:
    acme = small.stub("acme")
    bodies = [b"m-%d" % i for i in range(5)]
    first = acme.Publish(batch("rt", ["a"], bodies))
    assert not first.results
    assert (first.batch.duplicates, first.batch.stored) == (0, 5)
    assert list(first.batch.first_offsets) == [0]
    assert first.batch.timestamp > 1e9
    assert first.batch.first_sequence == 0
    second = acme.Publish(batch("rt", ["a"], [b"n-0", b"n-1"]))
    assert list(second.batch.first_offsets) == [5]
    assert second.batch.timestamp >= first.batch.timestamp
    assert read(acme, "rt", "a") == list(enumerate([*bodies, b"n-0", b"n-1"]))
    # Without lite-topics: the parent topic's own queue, one first offset.
    parent = acme.Publish(batch("rt", [], [b"p-0", b"p-1", b"p-2"]))
    assert list(parent.batch.first_offsets) == [0]
    assert read(acme, "rt") == [(0, b"p-0"), (1, b"p-1"), (2, b"p-2")]
    # Empty bodies and bodies at the limit are messages like any other.
    edge = acme.Publish(batch("rt", ["e"], [b"", b"x" * LIMIT]))
    assert edge.batch.stored == 2
    assert read(acme, "rt", "e") == [(0, b""), (1, b"x" * LIMIT)]


def test_a_batch_to_several_lite_topics_gets_a_first_offset_in_each(small: SmallServer) -> None:
    acme = small.stub("acme")
    acme.Publish(messages("multi", ["b"], [b"earlier-0", b"earlier-1", b"earlier-2"]))
    bodies = [b"x-%d" % i for i in range(4)]
    response = acme.Publish(batch("multi", ["a", "b", "c"], bodies))
    # In the order of the batch's lite_topics: "b" already held three messages.
    assert list(response.batch.first_offsets) == [0, 3, 0]
    assert read(acme, "multi", "a") == list(enumerate(bodies))
    assert read(acme, "multi", "b")[3:] == [(3 + i, b) for i, b in enumerate(bodies)]
    assert read(acme, "multi", "c") == list(enumerate(bodies))
    results, _ = expanded(batch("multi", ["a", "b", "c"], bodies), response)
    assert [r[0] for r in results] == [(i, 3 + i, i) for i in range(4)]


def test_the_compact_answer_says_what_the_per_message_answer_says(small: SmallServer) -> None:
    acme = small.stub("acme")
    bodies = [b"same-%d" % i for i in range(6)]
    one = acme.Publish(messages("twin-m", ["a", "b"], bodies, "twin-m", 7))
    other_request = batch("twin-b", ["a", "b"], bodies, "twin-b", 7)
    other = acme.Publish(other_request)
    results, timestamp = expanded(other_request, other)
    assert results == per_message(one)
    assert {r.timestamp for r in one.results} == {one.results[0].timestamp}
    assert timestamp >= one.results[0].timestamp


# ------------------------------------------------------------ deduplication


def test_a_resent_batch_is_answered_with_its_duplicates(small: SmallServer) -> None:
    acme = small.stub("acme")
    bodies = [b"d-%d" % i for i in range(4)]
    request = batch("dedup", ["a", "b"], bodies, "prod-1", 10)
    first = acme.Publish(request)
    assert (first.batch.duplicates, first.batch.stored, first.batch.first_sequence) == (0, 4, 10)
    original, timestamp = expanded(request, first)

    again = acme.Publish(request)
    assert (again.batch.duplicates, again.batch.stored) == (4, 0)
    assert list(again.batch.first_offsets) == []
    assert (again.batch.timestamp, again.batch.first_sequence) == (0.0, 0)
    assert expanded(request, again)[0] == [(o, True, q, n) for o, _, q, n in original]
    assert all(r.duplicate for r in again.results)
    assert {r.timestamp for r in again.results} == {timestamp}

    # A partial resend: sequences 12 and 13 are stored already, 14 and 15 are new.
    partial_request = batch("dedup", ["a", "b"], [b"d-2", b"d-3", b"d-4", b"d-5"], "prod-1", 12)
    partial = acme.Publish(partial_request)
    assert (partial.batch.duplicates, partial.batch.stored) == (2, 2)
    assert partial.batch.first_sequence == 14
    assert list(partial.batch.first_offsets) == [4, 4]
    results, _ = expanded(partial_request, partial)
    assert results == [
        (original[2][0], True, 12, 3),
        (original[3][0], True, 13, 3),
        ((4, 4), False, 14, 3),
        ((5, 5), False, 15, 3),
    ]
    expected = [(i, b"d-%d" % i) for i in range(6)]
    assert read(acme, "dedup", "a") == expected
    assert read(acme, "dedup", "b") == expected


def test_deduplication_spans_both_forms(small: SmallServer) -> None:
    acme = small.stub("acme")
    acme.Publish(batch("span", ["a"], [b"s-0", b"s-1", b"s-2"], "prod-2", 1))
    # The per-message form resends 2 and 3 and adds 4: two duplicates.
    mixed = acme.Publish(messages("span", ["a"], [b"s-1", b"s-2", b"s-3"], "prod-2", 2))
    assert per_message(mixed) == [((1,), True, 2, 3), ((2,), True, 3, 3), ((3,), False, 4, 3)]
    # And the compact form resends what the per-message form stored.
    back = acme.Publish(batch("span", ["a"], [b"s-3", b"s-4"], "prod-2", 4))
    assert [(list(r.offsets), r.duplicate) for r in back.results] == [([3], True)]
    assert (back.batch.stored, list(back.batch.first_offsets)) == (1, [4])
    assert [b for _, b in read(acme, "span", "a")] == [b"s-%d" % i for i in range(5)]


# -------------------------------------------------------------- both forms


def test_both_forms_mixed_across_calls_share_the_queue(small: SmallServer) -> None:
    acme = small.stub("acme")
    acme.Publish(messages("mix", ["a"], [b"m-0", b"m-1"]))
    compact = acme.Publish(batch("mix", ["a"], [b"b-0", b"b-1", b"b-2"]))
    assert list(compact.batch.first_offsets) == [2]
    after = acme.Publish(messages("mix", ["a"], [b"m-2"]))
    assert not after.HasField("batch")
    assert [list(r.offsets) for r in after.results] == [[5]]
    assert [b for _, b in read(acme, "mix", "a")] == [
        b"m-0",
        b"m-1",
        b"b-0",
        b"b-1",
        b"b-2",
        b"m-2",
    ]


def test_tenants_and_their_limits_apply_to_batches(small: SmallServer) -> None:
    beta = small.stub("beta")
    beta.Publish(batch("own", ["a"], [b"beta"]))
    assert read(small.stub("acme"), "own", "a") == []
    # tiny may hold 3 lite-topics: a batch creating a fourth is refused whole.
    tiny = small.stub("tiny")
    tiny.Publish(batch("lim", ["a", "b"], [b"1", b"2"]))
    code, details = refused(tiny, batch("lim", ["c", "d"], [b"3"]))
    assert code is S.RESOURCE_EXHAUSTED
    assert "max_lite_topics" in details
    assert read(tiny, "lim", "c") == []


# --------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("request_", "code", "text"),
    [
        (
            pb.PublishRequest(
                messages=[pb.OutboundMessage(topic="t", body=b"x")],
                batch=pb.PublishBatch(topic="t", bodies=[b"x"]),
            ),
            S.INVALID_ARGUMENT,
            "messages and batch are both set",
        ),
        (
            pb.PublishRequest(batch=pb.PublishBatch(topic="t")),
            S.INVALID_ARGUMENT,
            "batch.bodies holds 0 messages; it must hold 1 to 10000",
        ),
        (
            batch("t", [], [b""] * 10_001),
            S.INVALID_ARGUMENT,
            "batch.bodies holds 10001 messages; it must hold 1 to 10000",
        ),
        (batch("bad topic", [], [b"x"]), S.INVALID_ARGUMENT, "batch: topic 'bad topic'"),
        (batch("a/b", [], [b"x"]), S.INVALID_ARGUMENT, "batch: topic 'a/b' holds a '/'"),
        (batch("", [], [b"x"]), S.INVALID_ARGUMENT, "batch: "),
        (
            batch("t", ["ok", "a/b"], [b"x"]),
            S.INVALID_ARGUMENT,
            "batch.lite_topics[1] 'a/b' breaks the lite-topic name rule",
        ),
        (
            batch("t", ["a", "b", "a"], [b"x"]),
            S.INVALID_ARGUMENT,
            "batch.lite_topics lists 'a' more than once",
        ),
        (
            batch("t", ["a"], [b"x", b"y", b"z", b"w" * (LIMIT + 1), b"v" * (LIMIT + 2)]),
            S.INVALID_ARGUMENT,
            f"batch.bodies[3]: message body is {LIMIT + 1} bytes, above the limit of {LIMIT}",
        ),
        (
            batch("t", ["a", "b", "c", "d"], [b"x"]),
            S.INVALID_ARGUMENT,
            f"lite_topics lists 4 names; at most {MAX_LITES} are allowed",
        ),
        (
            batch("t", ["a"], [b"x"], sequence=3),
            S.INVALID_ARGUMENT,
            "sequence is set without producer_id",
        ),
        (batch("t", ["a"], [b"x"], producer="no spaces"), S.INVALID_ARGUMENT, "producer_id"),
        (batch("%DLQ%g", [], [b"x"]), S.INVALID_ARGUMENT, "batch: "),
    ],
)
def test_bad_batches_are_refused_naming_the_field(
    small: SmallServer, request_: pb.PublishRequest, code: grpc.StatusCode, text: str
) -> None:
    acme = small.stub("acme")
    got, details = refused(acme, request_)
    assert (got, text in details) == (code, True), details
    # Nothing of a refused batch was stored.
    sent = request_.batch
    if sent.lite_topics and all("/" not in lite for lite in sent.lite_topics):
        assert read(acme, "t", sent.lite_topics[0]) == []


@pytest.mark.parametrize(
    ("compact", "per_message_form"),
    [
        (batch("bad topic", [], [b"x"]), messages("bad topic", [], [b"x"])),
        (batch("t", ["a/b"], [b"x"]), messages("t", ["a/b"], [b"x"])),
        (batch("t", ["a", "a"], [b"x"]), messages("t", ["a", "a"], [b"x"])),
        (batch("t", [], [b"x", b"y" * (LIMIT + 1)]), messages("t", [], [b"x", b"y" * (LIMIT + 1)])),
        (
            batch("t", ["a", "b", "c", "d"], [b"x"]),
            messages("t", ["a", "b", "c", "d"], [b"x"]),
        ),
    ],
)
def test_a_batch_breaks_the_rules_a_message_breaks_with_the_same_words(
    small: SmallServer, compact: pb.PublishRequest, per_message_form: pb.PublishRequest
) -> None:
    """The same rule and message as the per-message form; only the field's path differs."""
    acme = small.stub("acme")
    code, details = refused(acme, compact)
    reference_code, reference = refused(acme, per_message_form)
    assert code is reference_code
    translated = (
        reference.replace("messages[0]: ", "batch: ")
        .replace("messages[0].lite_topics", "batch.lite_topics")
        .replace("messages[1].body", "batch.bodies[1]")
    )
    assert details == translated
