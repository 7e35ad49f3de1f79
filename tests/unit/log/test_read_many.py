"""CommitLog.read_many: the consumer's batch read gives what read() gives, record by record."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from broker.errors import CorruptLog, StoreClosed
from broker.log import CommitLog, LogConfig, record, segment
from broker.log.record import HEADER_SIZE
from tests.unit.log.conftest import CountingFsync, FakeClock

CONFIG = LogConfig(segment_bytes=64 * 1024)


def _open(path: Path, fsync: CountingFsync, clock: FakeClock) -> CommitLog:
    return CommitLog.open(path, CONFIG, wall_clock=clock, fsync=fsync)


def _fill(log: CommitLog, seed: int) -> list[tuple[int, bytes]]:
    """Batches of mixed sizes (some above a read's 4 KiB guess) over several segments."""
    rng = random.Random(seed)
    written: list[tuple[int, bytes]] = []
    for n in range(60):
        batch = [
            bytes([n % 251]) * rng.choice((0, 1, 100, 1024, 4000, 5000, 9000))
            for _ in range(rng.randint(1, 8))
        ]
        written += zip(log.append(batch), batch, strict=True)
    return written


@pytest.mark.parametrize("seed", range(4))
def test_read_many_matches_read_in_any_order(
    tmp_path: Path, fsync: CountingFsync, clock: FakeClock, seed: int
) -> None:
    with _open(tmp_path, fsync, clock) as log:
        written = _fill(log, seed)
        assert len(log.segments()) > 3
        positions = [p for p, _ in written]
        assert log.read_many(positions) == [body for _, body in written]
        rng = random.Random(seed)
        mixed = rng.sample(positions, len(positions)) + positions[:5]  # any order, repeats
        assert log.read_many(mixed) == [log.read(p) for p in mixed]
        assert log.read_many([]) == []


def test_short_spans_split_into_several_reads(
    tmp_path: Path, fsync: CountingFsync, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment, "_SPAN", 3000)  # a few records per pread
    with _open(tmp_path, fsync, clock) as log:
        written = _fill(log, 7)
        assert log.read_many([p for p, _ in written]) == [body for _, body in written]


def test_positions_outside_the_log_come_back_none(
    tmp_path: Path, fsync: CountingFsync, clock: FakeClock
) -> None:
    with _open(tmp_path, fsync, clock) as log:
        [first, second] = log.append([b"one", b"two"])
        end = log.end_position
        assert log.read_many([-1, first, end, second, end + 100]) == [
            None,
            b"one",
            None,
            b"two",
            None,
        ]


def test_a_position_inside_a_record_is_corrupt_as_with_read(
    tmp_path: Path, fsync: CountingFsync, clock: FakeClock
) -> None:
    with _open(tmp_path, fsync, clock) as log:
        [first, _] = log.append([b"a" * 50, b"b" * 50])
        with pytest.raises(CorruptLog):
            log.read(first + 1)
        with pytest.raises(CorruptLog):
            log.read_many([first, first + 1])


def test_a_skipped_corrupt_record_comes_back_none(tmp_path: Path) -> None:
    with CommitLog.open(tmp_path, CONFIG) as log:
        positions = log.append([bytes([i]) * 300 for i in range(10)])
    bad = positions[4]
    with open(tmp_path / f"{0:020d}.log", "r+b") as f:  # flip a payload byte
        f.seek(bad + HEADER_SIZE + 7)
        byte = f.read(1)[0]
        f.seek(bad + HEADER_SIZE + 7)
        f.write(bytes([byte ^ 0xFF]))
    skip = LogConfig(segment_bytes=CONFIG.segment_bytes, skip_corrupt=True)
    with CommitLog.open(tmp_path, skip) as log:
        found = log.read_many(positions)
    assert found[4] is None
    assert found[:4] + found[5:] == [bytes([i]) * 300 for i in (0, 1, 2, 3, 5, 6, 7, 8, 9)]


def test_a_closed_log_refuses(tmp_path: Path, fsync: CountingFsync, clock: FakeClock) -> None:
    log = _open(tmp_path, fsync, clock)
    [position] = log.append([b"x"])
    log.close()
    with pytest.raises(StoreClosed):
        log.read_many([position])


def test_payload_at_takes_only_whole_valid_frames() -> None:
    frames = record.encode_many([b"hello", b"", b"world!"])
    limit = record.MAX_PAYLOAD_BYTES
    assert record.payload_at(frames, 0, limit) == b"hello"
    assert record.payload_at(frames, HEADER_SIZE + 5, limit) == b""
    assert record.payload_at(frames, 2 * HEADER_SIZE + 5, limit) == b"world!"
    assert record.payload_at(frames[:-1], 2 * HEADER_SIZE + 5, limit) is None  # cut short
    assert record.payload_at(frames, len(frames) - 3, limit) is None  # no room for a header
    assert record.payload_at(frames, 0, 4) is None  # above the record limit
    damaged = bytearray(frames)
    damaged[HEADER_SIZE] ^= 0x01
    assert record.payload_at(bytes(damaged), 0, limit) is None  # CRC
    wrong_version = bytearray(frames)
    wrong_version[4] = record.VERSION + 1
    assert record.payload_at(bytes(wrong_version), 0, limit) is None


@pytest.mark.parametrize("seed", range(3))
def test_read_parsed_hands_each_payload_in_place(
    tmp_path: Path, fsync: CountingFsync, clock: FakeClock, seed: int
) -> None:
    with _open(tmp_path, fsync, clock) as log:
        written = _fill(log, seed)
        positions = [p for p, _ in written]
        spans = log.read_parsed(
            positions, lambda buf, start, end: (bytes(buf[start:end]), end - start)
        )
        assert spans == [(body, len(body)) for _, body in written]
        rng = random.Random(seed)
        mixed = [-1, *rng.sample(positions, 10), log.end_position]  # any order, outside
        assert log.read_parsed(mixed, lambda buf, start, end: buf[start:end]) == [
            None,
            *[log.read(p) for p in mixed[1:-1]],
            None,
        ]


@pytest.mark.parametrize("span", [3000, segment._SPAN])
def test_read_spans_hold_each_record_start(
    tmp_path: Path,
    fsync: CountingFsync,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    span: int,
) -> None:
    monkeypatch.setattr(segment, "_SPAN", span)
    with _open(tmp_path, fsync, clock) as log:
        written = _fill(log, 3)
        positions = [p for p, _ in written]
        spans = log.read_spans(positions)
        assert spans is not None
        assert len(spans) >= len(log.segments())  # a span never crosses a segment
        covered = [i for _, _, i, j in spans for i in range(i, j)]
        assert covered == list(range(len(positions)))
        for data, low, i, j in spans:
            for position in positions[i:j]:
                at = position - low
                frame = data[at : at + HEADER_SIZE]  # what is there is the record's own start
                payload = log.read(position)
                assert frame == record.encode(payload)[:HEADER_SIZE][: len(frame)]


def test_read_spans_leave_unordered_or_outside_reads_to_read_parsed(
    tmp_path: Path, fsync: CountingFsync, clock: FakeClock
) -> None:
    with _open(tmp_path, fsync, clock) as log:
        first, second = log.append([b"one", b"two"])
        assert log.read_spans([]) == []
        assert log.read_spans([second, first]) is None
        assert log.read_spans([first, log.end_position]) is None
        assert log.read_spans([-1, first]) is None
        assert log.read_spans([first, second]) is not None
