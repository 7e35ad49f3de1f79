"""Damage the files on disk, reopen, and check what recovery does about it.

At the log's end (the last record of the last segment): a cut or flipped
bytes are a torn tail, cut off and reported. In the middle: CorruptLog naming
the file and the damaged record's offset, files left untouched; with
``skip_corrupt`` the log opens, reports the record and answers NotFound for it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from broker.errors import CorruptLog, NotFound
from broker.log import CommitLog, LogConfig, LogLocation
from broker.log.record import HEADER_SIZE

pytestmark = pytest.mark.crash

CONFIG = LogConfig(segment_bytes=4096)
SKIP = LogConfig(segment_bytes=4096, skip_corrupt=True)
RECORDS = 120


def _payload(i: int) -> bytes:
    return f"record {i:04d} ".encode() * (2 + 2 * (i % 15))


def _build(directory: Path) -> list[tuple[int, bytes]]:
    with CommitLog.open(directory, CONFIG) as log:
        for i in range(0, RECORDS, 4):
            batch = [_payload(j) for j in range(i, i + 4)]
            log.append(batch)
        return list(log.scan(0))


def _locate(directory: Path, position: int) -> tuple[Path, int]:
    """Segment file and in-file offset of a global position."""
    bases = sorted(int(p.name[:20]) for p in directory.glob("*.log"))
    base = max(b for b in bases if b <= position)
    return directory / f"{base:020d}.log", position - base


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.log"))}


def _flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


@pytest.mark.parametrize("seed", range(8))
def test_a_cut_inside_the_last_record_is_a_torn_tail(tmp_path: Path, seed: int) -> None:
    records = _build(tmp_path)
    last_position, last_payload = records[-1]
    path, offset = _locate(tmp_path, last_position)
    cut = random.Random(seed).randrange(1, HEADER_SIZE + len(last_payload))
    os.truncate(path, offset + cut)
    with CommitLog.open(tmp_path, CONFIG) as log:
        assert log.recovery.torn_tail_at == LogLocation(path, offset)
        assert log.recovery.truncated_bytes == cut
        assert log.recovery.skipped == ()
        assert list(log.scan(0)) == records[:-1]
        assert log.end_position == last_position
        assert log.append([b"after the cut"]) == [last_position]
    with CommitLog.open(tmp_path, CONFIG) as log:
        assert log.recovery.clean
        assert list(log.scan(0))[-1] == (last_position, b"after the cut")


@pytest.mark.parametrize("seed", range(8))
def test_flipped_bytes_in_the_last_record_are_a_torn_tail(tmp_path: Path, seed: int) -> None:
    records = _build(tmp_path)
    last_position, last_payload = records[-1]
    path, offset = _locate(tmp_path, last_position)
    rng = random.Random(seed)
    size = HEADER_SIZE + len(last_payload)
    for index in rng.sample(range(size), rng.randint(1, 4)):
        _flip(path, offset + index, rng.randint(1, 255))
    with CommitLog.open(tmp_path, CONFIG) as log:
        assert log.recovery.torn_tail_at == LogLocation(path, offset)
        assert log.recovery.truncated_bytes == size
        assert list(log.scan(0)) == records[:-1]


def test_a_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    records = _build(tmp_path)
    end_position = records[-1][0] + HEADER_SIZE + len(records[-1][1])
    path, offset = _locate(tmp_path, records[-1][0])
    end_offset = offset + HEADER_SIZE + len(records[-1][1])
    with open(path, "ab") as f:
        f.write(bytes(3000))
    with CommitLog.open(tmp_path, CONFIG) as log:
        assert log.recovery.torn_tail_at == LogLocation(path, end_offset)
        assert log.recovery.truncated_bytes == 3000
        assert log.end_position == end_position
        assert list(log.scan(0)) == records


@pytest.mark.parametrize(("which", "byte"), [(10, 0), (10, 4), (10, 7), (10, 30), (60, 12)])
def test_a_flip_in_the_middle_refuses_to_open(tmp_path: Path, which: int, byte: int) -> None:
    """Byte 0 is in the length, 4 the version, 7 the CRC, the rest payload."""
    records = _build(tmp_path)
    path, offset = _locate(tmp_path, records[which][0])
    _flip(path, offset + byte)
    before = _snapshot(tmp_path)
    with pytest.raises(CorruptLog) as info:
        CommitLog.open(tmp_path, CONFIG)
    assert (info.value.path, info.value.offset) == (path, offset)
    assert str(path) in str(info.value)
    assert f"byte offset {offset}" in str(info.value)
    assert _snapshot(tmp_path) == before, "a refused open changed the files"


def test_a_flip_in_the_last_segment_with_records_after_it_is_corruption(tmp_path: Path) -> None:
    records = _build(tmp_path)
    path, offset = _locate(tmp_path, records[-3][0])
    _flip(path, offset + HEADER_SIZE + 2)
    with pytest.raises(CorruptLog) as info:
        CommitLog.open(tmp_path, CONFIG)
    assert (info.value.path, info.value.offset) == (path, offset)


@pytest.mark.parametrize("which", [10, RECORDS - 3])
def test_skip_corrupt_opens_reports_and_hides_the_record(tmp_path: Path, which: int) -> None:
    records = _build(tmp_path)
    bad_position = records[which][0]
    path, offset = _locate(tmp_path, bad_position)
    _flip(path, offset + HEADER_SIZE + 5)
    with CommitLog.open(tmp_path, SKIP) as log:
        [(skipped_path, skipped_offset, reason)] = log.recovery.skipped
        assert (skipped_path, skipped_offset) == (path, offset)
        assert "CRC32C mismatch" in reason
        assert log.recovery.torn_tail_at is None
        with pytest.raises(NotFound, match="corrupt stretch"):
            log.read(bad_position)
        assert list(log.scan(0)) == records[:which] + records[which + 1 :]
        assert list(log.scan(bad_position)) == records[which + 1 :]
        assert log.read(records[which + 1][0]) == records[which + 1][1]
        log.append([b"still writable"])
    # Without the flag the damage is still refused: skipping never repairs silently.
    with pytest.raises(CorruptLog):
        CommitLog.open(tmp_path, CONFIG)


def test_a_missing_segment_is_a_gap(tmp_path: Path) -> None:
    _build(tmp_path)
    segments = sorted(tmp_path.glob("*.log"))
    assert len(segments) >= 4
    gone = segments[1]
    gone_base, gone_size = int(gone.name[:20]), gone.stat().st_size
    gone.unlink()
    with pytest.raises(CorruptLog, match="bytes are missing") as info:
        CommitLog.open(tmp_path, CONFIG)
    assert info.value.path == segments[0]
    with CommitLog.open(tmp_path, SKIP) as log:
        assert [s.path for s in log.recovery.skipped] == [segments[0]]
        with pytest.raises(NotFound):
            log.read(gone_base)
        positions = [p for p, _ in log.scan(0)]
        assert not any(gone_base <= p < gone_base + gone_size for p in positions)


def test_a_cut_closed_segment_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    _build(tmp_path)
    first = sorted(tmp_path.glob("*.log"))[0]
    size = first.stat().st_size
    os.truncate(first, size - 5)
    with pytest.raises(CorruptLog) as info:
        CommitLog.open(tmp_path, CONFIG)
    assert info.value.path == first
    assert os.path.getsize(first) == size - 5
