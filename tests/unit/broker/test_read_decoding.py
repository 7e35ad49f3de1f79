"""The read path's lean decoders agree with the full ones on every shape of record."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import envelope
from broker.index import keys as k

names = st.binary(min_size=1, max_size=200)
queue_lists = st.lists(st.tuples(names, st.integers(0, 2**64 - 1)), min_size=1, max_size=4)
props = st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=50), max_size=3)


def _full(payload: bytes) -> tuple[float, dict[str, str], int, bytes, bool]:
    rec = envelope.decode_message(payload)
    return rec.timestamp, dict(rec.properties), rec.size, rec.body, rec.chunked


def _lean(payload: bytes) -> tuple[float, dict[str, str], int, bytes, bool]:
    ts, properties, size, body, chunked = envelope.decode_delivery(payload)
    return ts, dict(properties), size, body, chunked


@given(st.floats(allow_nan=False), queue_lists, props, st.binary(max_size=300))
def test_inline_records_decode_alike(
    ts: float, queues: list[tuple[bytes, int]], properties: dict[str, str], body: bytes
) -> None:
    payload = envelope.encode_inline(ts, queues, envelope.encode_properties(properties), body)
    assert _lean(payload) == _full(payload) == (ts, properties, len(body), body, False)


@given(st.floats(allow_nan=False), names, st.integers(0, 2**64 - 1), st.binary(max_size=300))
def test_the_common_shape_takes_the_short_branch(
    ts: float, name: bytes, offset: int, body: bytes
) -> None:
    payload = envelope.encode_single(
        envelope.single_head(ts), name, offset, envelope.NO_PROPERTIES, body
    )
    assert _lean(payload) == (ts, {}, len(body), body, False)


@given(queue_lists, props, st.integers(0, 2**40), st.lists(st.integers(0, 2**64 - 1), min_size=1))
def test_chunked_records_decode_alike(
    queues: list[tuple[bytes, int]], properties: dict[str, str], size: int, chunks: list[int]
) -> None:
    encoded = envelope.encode_properties(properties)
    payload = envelope.encode_chunked(2.5, queues, encoded, size, chunks)
    assert _lean(payload) == _full(payload) == (2.5, properties, size, b"", True)


def test_the_shared_empty_properties_cannot_be_changed() -> None:
    payload = envelope.encode_single(envelope.single_head(1.0), b"q", 0, b"\x00\x00", b"x")
    _, properties, _, _, _ = envelope.decode_delivery(payload)
    with pytest.raises(TypeError):
        properties["k"] = "v"  # type: ignore[index]


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x02" + b"\x00" * 20, b"\x01\x00" + b"\x00" * 8 + b"\x00\x01\x00\x05ab"],
)
def test_malformed_records_raise_value_error(garbage: bytes) -> None:
    with pytest.raises(ValueError, match=r"malformed|not a message"):
        envelope.decode_delivery(garbage)


@given(st.integers(0, 2**64 - 2), st.integers(0, 2**32 - 1), st.none() | st.integers(0, 2**64 - 2))
def test_locate_matches_decode_index(position: int, size: int, low: int | None) -> None:
    raw = k.encode_index(position, size, low)
    value = k.decode_index(raw)
    assert k.locate(raw) == (value.position, value.lowest)


@given(st.binary(max_size=40), st.floats(allow_nan=False), names, props, st.binary(max_size=300))
def test_a_record_decodes_alike_in_place_among_others(
    before: bytes, ts: float, name: bytes, properties: dict[str, str], body: bytes
) -> None:
    payload = envelope.encode_single(
        envelope.single_head(ts), name, 7, envelope.encode_properties(properties), body
    )
    buf = before + payload + b"\x00\x00trailing"  # what follows must not be read
    assert envelope.delivery_in(buf, len(before), len(before) + len(payload)) == (
        envelope.decode_delivery(payload)
    )


def test_a_name_that_runs_past_its_record_does_not_read_the_next_one() -> None:
    payload = envelope.encode_single(envelope.single_head(1.0), b"q", 0, b"\x00\x00", b"")
    cut = payload[:-2]  # ends inside the properties: the record is malformed
    buf = cut + envelope.NO_PROPERTIES + b"next record"
    with pytest.raises(ValueError, match=r"malformed|not a message"):
        envelope.delivery_in(buf, 0, len(cut))


@given(st.lists(st.integers(0, 2**64 - 2), max_size=20))
def test_positions_of_plain_entries_are_their_positions(positions: list[int]) -> None:
    raws = [k.encode_index(p, 10) for p in positions]
    assert k.positions_of(raws) == positions
    if positions:
        assert k.positions_of([*raws, k.encode_index(5, 10, low=1)]) is None  # a chunked one
        assert k.positions_of([*raws, None]) is None  # type: ignore[list-item]
