"""Broker record payloads: what replay needs survives a round trip; bad input is named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import envelope
from broker.errors import InvalidArgument

names = st.binary(min_size=1, max_size=200)
queue_lists = st.lists(st.tuples(names, st.integers(0, 2**64 - 1)), min_size=1, max_size=8)
props = st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=50), max_size=5)


@given(st.floats(allow_nan=False), queue_lists, props, st.binary(max_size=500))
def test_inline_round_trip(
    ts: float, queues: list[tuple[bytes, int]], properties: dict[str, str], body: bytes
) -> None:
    payload = envelope.encode_inline(ts, queues, envelope.encode_properties(properties), body)
    assert envelope.kind_of(payload) == envelope.MESSAGE
    rec = envelope.decode_message(payload)
    assert rec.timestamp == ts
    assert list(rec.queues) == queues
    assert rec.properties == properties
    assert (rec.body, rec.size, rec.chunks, rec.low) == (body, len(body), (), None)
    assert not rec.chunked
    assert envelope.decode_message(payload, with_body=False).body == b""


@given(st.floats(allow_nan=False), names, st.integers(0, 2**64 - 1), props, st.binary())
def test_single_queue_encoding_matches_the_general_one(
    ts: float, name: bytes, offset: int, properties: dict[str, str], body: bytes
) -> None:
    encoded = envelope.encode_properties(properties)
    assert envelope.encode_single(
        envelope.single_head(ts), name, offset, encoded, body
    ) == envelope.encode_inline(ts, [(name, offset)], encoded, body)


@given(queue_lists, st.integers(0, 2**40), st.lists(st.integers(0, 2**64 - 1), min_size=1))
def test_chunked_round_trip(queues: list[tuple[bytes, int]], size: int, chunks: list[int]) -> None:
    payload = envelope.encode_chunked(1.5, queues, envelope.NO_PROPERTIES, size, chunks)
    rec = envelope.decode_message(payload)
    assert rec.chunked
    assert rec.body == b""
    assert (rec.size, list(rec.chunks), rec.low) == (size, chunks, min(chunks))
    assert list(rec.queues) == queues


def test_chunk_payload_is_tagged() -> None:
    payload = envelope.chunk_payload(memoryview(b"abc"))
    assert envelope.kind_of(payload) == envelope.CHUNK
    assert payload[1:] == b"abc"
    with pytest.raises(ValueError, match="not a message record"):
        envelope.decode_message(payload)


@pytest.mark.parametrize(
    "garbage", [b"", b"\x02", b"\x01", b"\x01\x00" + b"\x00" * 8 + b"\x00\x05ab"]
)
def test_malformed_records_raise_value_error(garbage: bytes) -> None:
    with pytest.raises(ValueError, match=r"malformed|not a message"):
        envelope.decode_message(garbage)


def test_no_properties_is_two_bytes() -> None:
    assert envelope.encode_properties({}) == envelope.NO_PROPERTIES == b"\x00\x00"


@pytest.mark.parametrize(
    ("properties", "rule"),
    [
        ({str(i): "" for i in range(envelope.MAX_PROPERTIES + 1)}, "at most 128"),
        ({"": "x"}, "must be 1 to 256 bytes"),
        ({"k" * 257: "x"}, "must be 1 to 256 bytes"),
        ({"k": "v" * (envelope.MAX_PROPERTY_VALUE_BYTES + 1)}, "at most 65536"),
        ({f"k{i}": "v" * 60000 for i in range(20)}, "encoded; at most 1048576"),
        ({"k": 1}, "must be strings"),
    ],
)
def test_property_rules(properties: dict[str, str], rule: str) -> None:
    with pytest.raises(InvalidArgument, match=rule):
        envelope.encode_properties(properties)
