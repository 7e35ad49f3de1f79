"""One segment file: naming, append/read, block-wise iteration, open-time checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.errors import CorruptLog, FailedPrecondition
from broker.log import record, segment
from broker.log.segment import Segment, parse_segment_name, segment_name


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny blocks so records straddle block edges and exceed a block."""
    monkeypatch.setattr(segment, "_BLOCK", 64)


def _write(directory: Path, payloads: list[bytes], base: int = 0) -> Segment:
    seg = Segment.create(directory, base)
    for payload in payloads:
        seg.append(payload)
    return seg


def test_names_are_twenty_digit_bases() -> None:
    assert segment_name(0) == "00000000000000000000.log"
    assert segment_name(1234) == "00000000000000001234.log"
    assert parse_segment_name("00000000000000001234.log") == 1234
    assert parse_segment_name("1234.log") is None
    assert parse_segment_name(".lock") is None
    assert parse_segment_name("00000000000000001234.log.tmp") is None
    with pytest.raises(ValueError, match="segment base"):
        segment_name(-1)


def test_append_returns_relative_offsets_and_read_at_checks(tmp_path: Path) -> None:
    seg = Segment.create(tmp_path, 500)
    first = seg.append(b"one")
    second = seg.append(b"two-two")
    assert (first, second) == (0, record.HEADER_SIZE + 3)
    assert seg.size == 2 * record.HEADER_SIZE + 3 + 7
    assert seg.end == 500 + seg.size
    assert seg.read_at(first) == b"one"
    assert seg.read_at(second) == b"two-two"
    assert seg.path.name == segment_name(500)
    seg.retire()


def test_read_at_a_big_record_needs_a_second_read(tmp_path: Path) -> None:
    big = os.urandom(3 * 4096 + 17)
    seg = _write(tmp_path, [b"small", big, b"after"])
    assert seg.read_at(record.HEADER_SIZE + 5) == big
    seg.retire()


def test_read_at_a_position_that_is_not_a_record_start_is_corrupt(tmp_path: Path) -> None:
    seg = _write(tmp_path, [b"x" * 100, b"y" * 100])
    with pytest.raises(CorruptLog) as info:
        seg.read_at(3)
    assert info.value.offset == 3
    assert info.value.path == seg.path
    with pytest.raises(ValueError, match="outside segment"):
        seg.read_at(seg.size)
    seg.retire()


def test_read_at_detects_a_flipped_payload_byte(tmp_path: Path) -> None:
    seg = _write(tmp_path, [b"abcdef"])
    with open(seg.path, "r+b") as f:
        f.seek(record.HEADER_SIZE + 2)
        f.write(b"Z")
    with pytest.raises(CorruptLog, match="CRC32C mismatch"):
        seg.read_at(0)
    seg.retire()


@pytest.mark.usefixtures("small_blocks")
def test_records_iterates_across_block_edges_and_oversized_records(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (i * 7 % 150) for i in range(60)]
    seg = _write(tmp_path, payloads)
    got = list(seg.records())
    assert [p for _, p in got] == payloads
    offsets = record.frame_offsets(payloads)
    assert [o for o, _ in got] == offsets
    # From the middle, and stopping early.
    assert [p for _, p in seg.records(offsets[10], offsets[20])] == payloads[10:20]
    seg.retire()


def test_records_raises_on_corruption_naming_file_and_offset(tmp_path: Path) -> None:
    payloads = [b"a" * 50, b"b" * 50, b"c" * 50]
    seg = _write(tmp_path, payloads)
    second = record.frame_offsets(payloads)[1]
    with open(seg.path, "r+b") as f:
        f.seek(second + record.HEADER_SIZE + 10)
        f.write(b"!")
    with pytest.raises(CorruptLog) as info:
        list(seg.records())
    assert (info.value.path, info.value.offset) == (seg.path, second)
    seg.retire()


@pytest.mark.usefixtures("small_blocks")
def test_check_of_a_clean_segment(tmp_path: Path) -> None:
    payloads = [bytes([i]) * (i * 13 % 200) for i in range(40)]
    seg = _write(tmp_path, payloads)
    check = seg.check(is_last=True, skip_corrupt=False, max_record_bytes=1024)
    assert check == segment.SegmentCheck(seg.size, None, (), 40)
    seg.retire()


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("cut", [1, 5, record.HEADER_SIZE, record.HEADER_SIZE + 30, 99])
def test_check_finds_a_torn_tail_in_the_last_segment(tmp_path: Path, cut: int) -> None:
    payloads = [b"p" * 90] * 5 + [b"q" * 100]
    seg = _write(tmp_path, payloads)
    last = record.frame_offsets(payloads)[-1]
    os.truncate(seg.path, last + cut)
    seg.retire()
    seg = Segment.open(seg.path)
    check = seg.check(is_last=True, skip_corrupt=False, max_record_bytes=1024)
    assert (check.valid_end, check.torn_at, check.records) == (last, last, 5)
    seg.retire()


def test_check_treats_a_zero_filled_tail_as_torn(tmp_path: Path) -> None:
    seg = _write(tmp_path, [b"data"] * 3)
    end = seg.size
    seg.retire()
    with open(seg.path, "ab") as f:
        f.write(bytes(4096))
    seg = Segment.open(seg.path)
    check = seg.check(is_last=True, skip_corrupt=False, max_record_bytes=1024)
    assert (check.valid_end, check.torn_at) == (end, end)
    seg.truncate(check.valid_end)
    assert os.path.getsize(seg.path) == end
    seg.retire()


def _flip_middle(tmp_path: Path) -> tuple[Segment, int, list[bytes]]:
    payloads = [f"record-{i:03d}-".encode() * 5 for i in range(20)]
    seg = _write(tmp_path, payloads)
    bad = record.frame_offsets(payloads)[7]
    with open(seg.path, "r+b") as f:
        f.seek(bad + record.HEADER_SIZE + 3)
        f.write(b"#")
    seg.retire()
    return Segment.open(seg.path), bad, payloads


@pytest.mark.parametrize("is_last", [True, False])
def test_check_refuses_corruption_followed_by_valid_records(tmp_path: Path, is_last: bool) -> None:
    seg, bad, _ = _flip_middle(tmp_path)
    with pytest.raises(CorruptLog) as info:
        seg.check(is_last=is_last, skip_corrupt=False, max_record_bytes=1024)
    assert (info.value.path, info.value.offset) == (seg.path, bad)
    assert "CRC32C" in info.value.reason
    seg.retire()


def test_check_skips_corruption_when_told(tmp_path: Path) -> None:
    seg, bad, payloads = _flip_middle(tmp_path)
    check = seg.check(is_last=True, skip_corrupt=True, max_record_bytes=1024)
    resume = record.frame_offsets(payloads)[8]
    assert check.torn_at is None
    assert check.valid_end == seg.size
    assert [(d.offset, d.end) for d in check.damaged] == [(bad, resume)]
    assert check.records == 19
    seg.retire()


def test_an_incomplete_record_ending_a_closed_segment_is_corruption(tmp_path: Path) -> None:
    seg = _write(tmp_path, [b"a" * 30, b"b" * 30])
    os.truncate(seg.path, seg.size - 4)
    seg.retire()
    seg = Segment.open(seg.path)
    start = record.HEADER_SIZE + 30
    with pytest.raises(CorruptLog) as info:
        seg.check(is_last=False, skip_corrupt=False, max_record_bytes=1024)
    assert info.value.offset == start
    check = seg.check(is_last=False, skip_corrupt=True, max_record_bytes=1024)
    assert [(d.offset, d.end) for d in check.damaged] == [(start, seg.size)]
    seg.retire()


def test_a_failed_write_is_cut_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seg = _write(tmp_path, [b"kept"])
    size = seg.size
    real_pwrite = os.pwrite

    def half_then_fail(fd: int, data: bytes | memoryview, offset: int) -> int:
        if len(data) > 10:
            return real_pwrite(fd, bytes(data)[:10], offset)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        seg.append(b"x" * 100)
    monkeypatch.undo()
    assert seg.size == size
    assert os.path.getsize(seg.path) == size
    assert seg.append(b"next") == size
    assert [p for _, p in seg.records()] == [b"kept", b"next"]
    seg.retire()


def test_a_failed_cut_back_poisons_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seg = _write(tmp_path, [b"kept"])

    def fail(*_args: object) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "pwrite", fail)
    monkeypatch.setattr(os, "ftruncate", fail)
    with pytest.raises(FailedPrecondition, match="needs recovery"):
        seg.append(b"x")
    monkeypatch.undo()
    seg.retire()


def test_a_pinned_segment_keeps_its_descriptor_until_unpinned(tmp_path: Path) -> None:
    seg = _write(tmp_path, [b"still readable"])
    assert seg.pin()
    seg.retire()
    seg.path.unlink()
    assert not seg.pin()  # retired: no new pins
    assert seg.read_at(0) == b"still readable"
    seg.unpin()
    with pytest.raises(OSError, match="Bad file descriptor"):
        seg.read_at(0)


def test_fsync_and_truncate_use_the_injected_fsync(tmp_path: Path) -> None:
    seg = _write(tmp_path, [b"a", b"b"])
    calls: list[int] = []
    seg.fsync(calls.append)
    seg.truncate(record.HEADER_SIZE + 1, calls.append)
    assert len(calls) == 2
    assert [p for _, p in seg.records()] == [b"a"]
    seg.retire()


def test_open_takes_the_last_write_time_from_the_file(tmp_path: Path) -> None:
    seg = _write(tmp_path, [b"a"])
    seg.set_mtime(1_000_000.0)
    seg.retire()
    reopened = Segment.open(seg.path)
    assert reopened.last_write_wall_s == 1_000_000.0
    reopened.retire()
