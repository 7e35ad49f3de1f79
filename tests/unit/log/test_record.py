"""Record framing: round trips, every kind of damage told apart, resync."""

from __future__ import annotations

import struct

import crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import InvalidArgument
from broker.log import record
from broker.log.record import HEADER_SIZE, Corrupt, Frame, Incomplete

payloads = st.binary(max_size=2048)


def test_header_layout_is_length_version_crc_big_endian() -> None:
    frame = record.encode(b"abc")
    assert HEADER_SIZE == 9
    length, version, crc = struct.unpack(">IBI", frame[:9])
    assert (length, version) == (3, record.VERSION)
    # The CRC covers the version byte and the payload.
    assert crc == crc32c.crc32c(bytes([record.VERSION]) + b"abc")
    assert frame[9:] == b"abc"


@given(payloads)
def test_encode_decode_round_trip(payload: bytes) -> None:
    frame = record.encode(payload)
    assert record.decode(frame) == Frame(0, len(frame), payload)


@given(st.lists(payloads, max_size=20))
def test_encode_many_equals_concatenated_encodes(batch: list[bytes]) -> None:
    data = record.encode_many(batch)
    assert data == b"".join(record.encode(p) for p in batch)
    offsets = record.frame_offsets(batch)
    assert [record.decode(data, o) for o in offsets] == [
        Frame(o, o + HEADER_SIZE + len(p), p) for o, p in zip(offsets, batch, strict=True)
    ]


@given(st.lists(payloads, min_size=1, max_size=20))
def test_walk_covers_a_whole_batch(batch: list[bytes]) -> None:
    data = record.encode_many(batch)
    result = record.walk(memoryview(data), 0, len(data), record.MAX_PAYLOAD_BYTES)
    assert result == record.Walk(len(data), len(batch), None)


@given(payloads, st.data())
def test_every_truncation_is_incomplete_never_corrupt(payload: bytes, data: st.DataObject) -> None:
    frame = record.encode(payload)
    cut = data.draw(st.integers(1, len(frame) - 1))
    decoded = record.decode(frame[:cut])
    assert isinstance(decoded, Incomplete)
    assert decoded.offset == 0
    if cut >= HEADER_SIZE:
        assert decoded.missing == len(frame) - cut
    else:  # without a whole header the length is unknown: it asks for the header first
        assert decoded.missing == HEADER_SIZE - cut
    walked = record.walk(memoryview(frame[:cut]), 0, cut, record.MAX_PAYLOAD_BYTES)
    assert walked.end == 0
    assert isinstance(walked.stop, Incomplete)


@given(st.binary(min_size=1, max_size=512), st.data())
def test_every_single_byte_flip_is_detected(payload: bytes, data: st.DataObject) -> None:
    """A flip anywhere gives Corrupt, or Incomplete when it makes the length overrun the buffer."""
    frame = bytearray(record.encode(payload))
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= data.draw(st.integers(1, 255))
    decoded = record.decode(bytes(frame))
    assert not isinstance(decoded, Frame)
    if index >= 4:  # length intact: it cannot look incomplete
        assert isinstance(decoded, Corrupt)


def test_an_empty_buffer_decodes_as_incomplete_and_walks_clean() -> None:
    assert record.decode(b"") == Incomplete(0, HEADER_SIZE)
    assert record.walk(memoryview(b""), 0, 0, 10) == record.Walk(0, 0, None)


def test_bad_version_is_corrupt() -> None:
    frame = bytearray(record.encode(b"x"))
    frame[4] = 2
    decoded = record.decode(bytes(frame))
    assert isinstance(decoded, Corrupt)
    assert "version 2" in decoded.reason


def test_bad_crc_is_corrupt_and_names_both_values() -> None:
    frame = bytearray(record.encode(b"hello"))
    frame[-1] ^= 0x01
    decoded = record.decode(bytes(frame))
    assert isinstance(decoded, Corrupt)
    assert "CRC32C mismatch" in decoded.reason


def test_absurd_length_is_corrupt_not_incomplete() -> None:
    frame = record.encode(b"x" * 100)
    decoded = record.decode(frame, max_record_bytes=50)
    assert decoded == Corrupt(0, "length 100 is above the record limit of 50 bytes")


def test_zero_filled_header_is_corrupt() -> None:
    assert isinstance(record.decode(bytes(32)), Corrupt)


def test_empty_payload_is_a_valid_record() -> None:
    frame = record.encode(b"")
    assert len(frame) == HEADER_SIZE
    assert record.decode(frame) == Frame(0, HEADER_SIZE, b"")


def test_decode_at_an_offset() -> None:
    data = record.encode(b"first") + record.encode(b"second")
    second = HEADER_SIZE + 5
    assert record.decode(data, second) == Frame(second, len(data), b"second")


def test_walk_stops_at_the_first_bad_record() -> None:
    good = record.encode(b"a" * 10)
    bad = bytearray(record.encode(b"b" * 10))
    bad[-1] ^= 0xFF
    data = good + bytes(bad) + good
    result = record.walk(memoryview(data), 0, len(data), 1024)
    assert result.end == len(good)
    assert result.count == 1
    assert isinstance(result.stop, Corrupt)
    assert result.stop.offset == len(good)


def test_walk_reports_a_partial_header_at_the_end() -> None:
    data = record.encode(b"a") + b"\x00\x00"
    result = record.walk(memoryview(data), 0, len(data), 1024)
    assert result.stop == Incomplete(HEADER_SIZE + 1, HEADER_SIZE - 2)


def test_encode_refuses_more_than_the_length_field_holds() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return record.MAX_PAYLOAD_BYTES + 1

    with pytest.raises(InvalidArgument, match="at most"):
        record.encode(Huge())


@given(st.binary(max_size=300), st.lists(payloads, min_size=1, max_size=5))
def test_resync_finds_the_first_valid_record_after_garbage(
    garbage: bytes, batch: list[bytes]
) -> None:
    tail = record.encode_many(batch)
    data = garbage + tail
    found = record.resync(data, 0, 4096)
    assert found is not None
    assert found <= len(garbage)  # garbage may hold a valid frame by chance, never later
    assert isinstance(record.decode(data, found, max_record_bytes=4096), Frame)


def test_resync_skips_zero_fill_and_returns_none_without_a_valid_record() -> None:
    assert record.resync(bytes(10_000), 0, 4096) is None
    bad = bytearray(record.encode(b"z" * 40))
    bad[20] ^= 0x55
    assert record.resync(bytes(bad), 1, 4096) is None
    data = bytes(1000) + record.encode(b"ok")
    assert record.resync(data, 0, 4096) == 1000
