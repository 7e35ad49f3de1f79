"""Publish in bulk: the same requests, the same errors and the same response as field by field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import InvalidArgument, MessageTooLarge
from broker.hub import Stored
from broker.proto import broker_pb2 as pb
from broker.publish_wire import build_response, encode_response, publish_requests, uvarint
from broker.types import PublishRequest
from broker.wire import outbound

LIMIT = 64

topics = st.sampled_from(["chatbot", "jobs", "a.b-c_d"])
lites = st.lists(st.sampled_from(["s-1", "s-2", "x:y@z=1+2", "q"]), max_size=3, unique=True)
bodies = st.binary(max_size=LIMIT)
messages = st.builds(
    lambda topic, names, body: pb.OutboundMessage(topic=topic, lite_topics=names, body=body),
    topics,
    lites,
    bodies,
)


def _one_by_one(tenant: str, batch: list[pb.OutboundMessage]) -> list[PublishRequest]:
    return [outbound(tenant, i, m, LIMIT) for i, m in enumerate(batch)]


def _request(batch: list[pb.OutboundMessage]) -> pb.PublishRequest:
    # Decoded from bytes, as the server gets them.
    return pb.PublishRequest.FromString(pb.PublishRequest(messages=batch).SerializeToString())


@given(st.lists(messages, min_size=1, max_size=30))
def test_valid_batches_give_what_outbound_gives(batch: list[pb.OutboundMessage]) -> None:
    parsed = _request(batch).messages
    assert publish_requests("acme", parsed, LIMIT) == _one_by_one("acme", list(parsed))


def test_properties_and_reply_to_take_the_per_message_path() -> None:
    batch = [
        pb.OutboundMessage(topic="jobs", body=b"a"),
        pb.OutboundMessage(topic="jobs", body=b"b", properties={"k": "v"}),
        pb.OutboundMessage(topic="jobs", body=b"c", reply_to="a2a/t-1"),
    ]
    parsed = _request(batch).messages
    got = publish_requests("acme", parsed, LIMIT)
    assert got == _one_by_one("acme", list(parsed))
    assert got[1].properties == {"k": "v"}
    assert got[2].properties == {"tidegate.reply_to": "a2a/t-1"}


@pytest.mark.parametrize(
    ("bad", "error", "text"),
    [
        (pb.OutboundMessage(topic="no/slash", body=b"x"), InvalidArgument, r"messages\[2\]"),
        (
            pb.OutboundMessage(topic="jobs", lite_topics=["bad name"], body=b"x"),
            InvalidArgument,
            r"messages\[2\]\.lite_topics\[0\]",
        ),
        (
            pb.OutboundMessage(topic="jobs", lite_topics=["a", "a"], body=b"x"),
            InvalidArgument,
            r"messages\[2\]\.lite_topics lists 'a' more than once",
        ),
        (
            pb.OutboundMessage(topic="jobs", body=b"x" * (LIMIT + 1)),
            MessageTooLarge,
            r"messages\[2\]",
        ),
        (
            pb.OutboundMessage(topic="jobs", body=b"x", properties={"tidegate.x": "1"}),
            InvalidArgument,
            r"messages\[2\]\.properties",
        ),
    ],
)
def test_a_bad_message_is_named_by_its_index(
    bad: pb.OutboundMessage, error: type[Exception], text: str
) -> None:
    good = pb.OutboundMessage(topic="jobs", lite_topics=["a"], body=b"x")
    parsed = _request([good, good, bad, good]).messages
    with pytest.raises(error, match=text) as info:
        publish_requests("acme", parsed, LIMIT)
    with pytest.raises(error) as reference:
        _one_by_one("acme", list(parsed))
    assert str(info.value) == str(reference.value)


def test_one_lite_topic_list_is_one_tuple_object() -> None:
    batch = [pb.OutboundMessage(topic="jobs", lite_topics=["a", "b"], body=b"x")] * 5
    got = publish_requests("acme", _request(batch).messages, LIMIT)
    assert len({id(r.lite_topics) for r in got}) == 1


outcomes = st.builds(
    Stored,
    st.lists(st.integers(0, 2**64 - 1), max_size=3).map(tuple),
    st.floats(allow_nan=False),
    st.booleans(),
    st.integers(0, 2**64 - 1),
)


@given(st.lists(st.tuples(messages, outcomes), max_size=30))
def test_the_encoded_response_decodes_to_the_built_one(
    pairs: list[tuple[pb.OutboundMessage, Stored]],
) -> None:
    requests = _one_by_one("acme", [m for m, _ in pairs])
    stored = [s for _, s in pairs]
    encoded = encode_response(requests, stored)
    assert pb.PublishResponse.FromString(encoded) == build_response(requests, stored)


def test_neighbouring_offsets_share_their_high_bytes_correctly() -> None:
    # Offsets crossing 7-bit boundaries, as a long batch into one queue makes them.
    requests = [PublishRequest("jobs", b"x", ("a",), {}, "acme")] * 400
    stored = [Stored((o,), 1.0, False, 0) for o in range(16_300, 16_700)]
    decoded = pb.PublishResponse.FromString(encode_response(requests, stored))
    assert [r.offsets[0] for r in decoded.results] == list(range(16_300, 16_700))


@given(st.integers(1, 2**64 - 1))  # 0 is the default: protobuf writes nothing for it
def test_uvarint_matches_protobuf(value: int) -> None:
    assert pb.PublishResult(sequence=value).SerializeToString() == b"\x30" + uvarint(value)
