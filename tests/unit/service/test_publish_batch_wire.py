"""The compact batch's wire work: the same requests and errors as the per-message
form, and an answer that decodes to the rule broker.proto states."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import BrokerError, InvalidArgument, MessageTooLarge
from broker.hub import Outcomes, Stored
from broker.proto import broker_pb2 as pb
from broker.publish_wire import batch_requests, encode_batch, encode_response
from broker.types import PublishRequest, PublishResult
from broker.wire import outbound

LIMIT = 64

topics = st.sampled_from(["chatbot", "jobs", "a.b-c_d"])
lites = st.lists(st.sampled_from(["s-1", "s-2", "x:y@z=1+2", "q"]), max_size=3, unique=True)
bodies = st.lists(st.binary(max_size=LIMIT), min_size=1, max_size=30)


def _batch(topic: str, names: list[str], sent: list[bytes]) -> pb.PublishBatch:
    # Decoded from bytes, as the server gets it.
    request = pb.PublishRequest(batch=pb.PublishBatch(topic=topic, lite_topics=names, bodies=sent))
    return pb.PublishRequest.FromString(request.SerializeToString()).batch


def _messages(topic: str, names: list[str], sent: list[bytes]) -> list[pb.OutboundMessage]:
    return [pb.OutboundMessage(topic=topic, lite_topics=names, body=b) for b in sent]


def _outbounds(messages: list[pb.OutboundMessage]) -> list[PublishRequest]:
    return [outbound("acme", i, m, LIMIT) for i, m in enumerate(messages)]


@given(topics, lites, bodies)
def test_a_valid_batch_gives_what_outbound_gives(
    topic: str, names: list[str], sent: list[bytes]
) -> None:
    requests, total, largest = batch_requests("acme", _batch(topic, names, sent), LIMIT)
    reference = _outbounds(_messages(topic, names, sent))
    assert requests == reference
    assert all(type(r) is PublishRequest for r in requests)
    assert (total, largest) == (sum(map(len, sent)), max(map(len, sent)))
    assert len({id(r.lite_topics) for r in requests}) == 1  # the store's checks find it hot


@pytest.mark.parametrize(
    ("topic", "names", "sent", "error", "text"),
    [
        ("no/slash", [], [b"x"], InvalidArgument, "batch: topic 'no/slash' holds a '/'"),
        ("", [], [b"x"], InvalidArgument, "batch: "),
        ("jobs", ["ok", "bad name"], [b"x"], InvalidArgument, "batch.lite_topics[1] 'bad name'"),
        ("jobs", ["a", "b", "a"], [b"x"], InvalidArgument, "batch.lite_topics lists 'a' more"),
        (
            "jobs",
            ["a"],
            [b"x", b"y" * (LIMIT + 1), b"z" * (LIMIT + 5)],
            MessageTooLarge,
            f"batch.bodies[1]: message body is {LIMIT + 1} bytes",
        ),
    ],
)
def test_a_bad_batch_is_refused_in_outbounds_words(
    topic: str, names: list[str], sent: list[bytes], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        batch_requests("acme", _batch(topic, names, sent), LIMIT)
    assert str(info.value).startswith(text)
    # The per-message form says the same, naming its own field.
    with pytest.raises(error) as reference:
        _outbounds(_messages(topic, names, sent))
    assert str(info.value).replace("batch.bodies[1]", "messages[1].body").replace(
        "batch", "messages[0]"
    ) == str(reference.value)


def _results(firsts: tuple[int, ...], count: int, timestamp: float) -> list[PublishResult]:
    return [PublishResult(100 + k, timestamp, tuple(f + k for f in firsts)) for k in range(count)]


def test_the_answer_holds_the_first_offsets_and_the_duplicates_results() -> None:
    requests = [PublishRequest("jobs", b"abc", ("a", "b"), {}, "acme")] * 5
    duplicates = [Stored((7, 9), 1.5, True, 40), Stored((), 0.0, True, 41)]
    outcomes = Outcomes(duplicates, _results((300, 2), 3, 2.5), 42)
    response = pb.PublishResponse.FromString(encode_batch(requests, outcomes))
    expected = pb.PublishResponse.FromString(encode_response(requests[:2], duplicates))
    expected.batch.CopyFrom(
        pb.PublishBatchResult(
            duplicates=2, stored=3, first_offsets=[300, 2], timestamp=2.5, first_sequence=42
        )
    )
    assert response == expected
    assert [(list(r.offsets), r.duplicate, r.sequence) for r in response.results] == [
        ([7, 9], True, 40),
        ([], True, 41),
    ]


def test_an_answer_with_nothing_stored_still_carries_its_batch_field() -> None:
    requests = [PublishRequest("jobs", b"abc", (), {}, "acme")] * 2
    duplicates = [Stored((1,), 1.0, True, 5), Stored((2,), 1.0, True, 6)]
    response = pb.PublishResponse.FromString(encode_batch(requests, Outcomes(duplicates, [], 7)))
    assert response.HasField("batch")
    assert (response.batch.duplicates, response.batch.stored) == (2, 0)
    assert list(response.batch.first_offsets) == []


def test_offsets_that_are_not_contiguous_are_an_internal_error_not_a_wrong_answer() -> None:
    requests = [PublishRequest("jobs", b"abc", ("a",), {}, "acme")] * 3
    gap = [PublishResult(1, 1.0, (0,)), PublishResult(2, 1.0, (1,)), PublishResult(3, 1.0, (5,))]
    with pytest.raises(BrokerError, match="not stored contiguously"):
        encode_batch(requests, Outcomes([], gap, 0))
