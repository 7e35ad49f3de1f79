"""The read path's lean decoders agree with the full ones on every shape of record,
in a payload and in the spans of a real log."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import envelope
from broker.errors import CorruptLog
from broker.index import keys as k
from broker.log import CommitLog, LogConfig, record, segment
from broker.reading import Reader
from broker.types import Message, QueueName

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


# ------------------------------------------------ the fused read of log spans

_SHAPES = st.sampled_from(["plain", "properties", "queues", "chunked"])
_BODY_SIZES = st.sampled_from([0, 1, 100, 1024, 4000, 9000])  # some past a read's 4 KiB guess


def _encoded(shape: str, offset: int, size: int) -> bytes:
    body = bytes([offset % 251]) * size
    if shape == "plain":
        return envelope.encode_single(
            envelope.single_head(float(offset)), b"t/q", offset, envelope.NO_PROPERTIES, body
        )
    if shape == "properties":
        properties = envelope.encode_properties({"k": str(offset)})
        return envelope.encode_single(
            envelope.single_head(float(offset)), b"t/q", offset, properties, body
        )
    if shape == "queues":
        queues = [(b"t/q", offset), (b"t/other", 3)]
        return envelope.encode_inline(float(offset), queues, envelope.NO_PROPERTIES, body)
    return envelope.encode_chunked(
        float(offset), [(b"t/q", offset)], envelope.NO_PROPERTIES, size, [1, 2]
    )


def _reader(log: CommitLog) -> Reader:
    return Reader(log, cast(Any, None), cast(Any, None), cast(Any, None))  # only the log is read


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_SHAPES, _BODY_SIZES), min_size=1, max_size=25), st.booleans())
def test_decoded_spans_match_the_records_one_by_one(
    records: list[tuple[str, int]], short_spans: bool
) -> None:
    name = QueueName("", "t", "q")
    with tempfile.TemporaryDirectory() as directory:
        config = LogConfig(segment_bytes=16 * 1024)  # records fall into several segments
        with CommitLog.open(Path(directory), config) as log, pytest.MonkeyPatch.context() as mp:
            if short_spans:
                mp.setattr(segment, "_SPAN", 3000)
            positions = log.append([_encoded(s, i, n) for i, (s, n) in enumerate(records)])
            offsets = list(range(len(records)))
            spans = log.read_spans(positions)
            assert spans is not None
            got = _reader(log)._decode(spans, name, offsets, positions, attempt=3, nowait=False)
            expected = [
                Message(name, o, p, *envelope.decode_delivery(log.read(p)), 3)
                for o, p in zip(offsets, positions, strict=True)
            ]
            assert got == expected
            assert [dict(m.properties) for m in got] == [dict(m.properties) for m in expected]


def test_a_damaged_record_in_a_span_is_corrupt(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path, LogConfig()) as log:
        positions = log.append([_encoded("plain", i, 300) for i in range(5)])
        with open(tmp_path / f"{0:020d}.log", "r+b") as f:  # a body byte of the third flips
            f.seek(positions[2] + record.HEADER_SIZE + 40)
            byte = f.read(1)[0]
            f.seek(positions[2] + record.HEADER_SIZE + 40)
            f.write(bytes([byte ^ 0xFF]))
        spans = log.read_spans(positions)
        assert spans is not None
        with pytest.raises(CorruptLog, match="CRC32C"):
            _reader(log)._decode(
                spans, QueueName("", "t", "q"), range(5), positions, attempt=0, nowait=False
            )
