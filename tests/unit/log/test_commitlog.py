"""CommitLog: positions, rotation, reads, reopen, retention, lifecycle."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.errors import (
    FailedPrecondition,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    StoreClosed,
)
from broker.log import CommitLog, FsyncPolicy, LogConfig
from broker.log.commitlog import BATCH_ALLOWANCE, RECORD_ALLOWANCE
from broker.log.record import HEADER_SIZE
from broker.log.segment import segment_name
from tests.unit.log.conftest import CountingFsync, FakeClock

SMALL = LogConfig(segment_bytes=4096)


def _open(path: Path, config: LogConfig, clock: FakeClock, fsync: CountingFsync) -> CommitLog:
    return CommitLog.open(path, config, wall_clock=clock, fsync=fsync)


def test_a_new_log_is_empty_and_clean(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    directory = tmp_path / "new" / "log"
    with _open(directory, SMALL, clock, fsync) as log:
        assert (log.start_position, log.end_position) == (0, 0)
        assert log.recovery.clean
        assert (directory / segment_name(0)).exists()
        assert list(log.scan(0)) == []


def test_positions_are_contiguous_and_grow(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        batch = [b"a", b"bb" * 10, b"", b"ccc"]
        first = log.append(batch)
        second = log.append([b"d" * 5])
        expected = [0]
        for payload in batch:
            expected.append(expected[-1] + HEADER_SIZE + len(payload))
        assert first == expected[:-1]
        assert second == [expected[-1]]
        assert log.end_position == expected[-1] + HEADER_SIZE + 5
        assert log.append([]) == []


def test_read_and_scan_return_what_was_appended(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        payloads = [f"message {i}".encode() * (i % 7 + 1) for i in range(200)]
        positions = [p for i in range(0, 200, 10) for p in log.append(payloads[i : i + 10])]
        assert [log.read(p) for p in positions] == payloads
        assert list(log.scan(log.start_position)) == list(zip(positions, payloads, strict=True))
        assert list(log.scan(positions[150])) == list(
            zip(positions[150:], payloads[150:], strict=True)
        )
        assert list(log.scan(log.end_position)) == []


def test_reads_outside_the_log_are_not_found(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        log.append([b"x"])
        with pytest.raises(NotFound, match=r"outside the retained range \[0, 10\)"):
            log.read(log.end_position)
        with pytest.raises(NotFound):
            log.read(-1)
        with pytest.raises(NotFound, match="scan start 11"):
            log.scan(11)


def test_rotation_keeps_batches_whole_and_segments_contiguous(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        batches = [[bytes([i]) * 300] * (i % 5 + 1) for i in range(40)]
        placed = [log.append(batch) for batch in batches]
        infos = log.segments()
        assert len(infos) > 5
        assert infos[0].base == 0
        for before, after in itertools.pairwise(infos):
            assert before.end == after.base
            assert before.closed
            assert before.size <= SMALL.segment_bytes
        assert not infos[-1].closed
        bases = [info.base for info in infos]
        for positions in placed:
            homes = {max(b for b in bases if b <= p) for p in positions}
            assert len(homes) == 1, "a batch spans two segments"
        assert sorted(p.name for p in tmp_path.glob("*.log")) == [segment_name(b) for b in bases]


def test_a_batch_bigger_than_a_segment_goes_alone_into_an_empty_one(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        log.append([b"small"])
        big = log.append([b"x" * 3000, b"y" * 3000])
        after = log.append([b"next"])
        infos = log.segments()
        assert big[0] == infos[1].base
        assert infos[1].size > SMALL.segment_bytes
        assert after == [infos[2].base]


def test_a_payload_above_the_limit_is_refused(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    config = LogConfig(segment_bytes=4096, max_record_bytes=100)
    with _open(tmp_path, config, clock, fsync) as log:
        with pytest.raises(MessageTooLarge, match="101 bytes, above the limit of 100"):
            log.append([b"ok", b"x" * 101])
        assert log.end_position == 0


def test_reopen_keeps_everything_and_positions_continue(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    payloads = [os.urandom(i % 500) for i in range(300)]
    with _open(tmp_path, SMALL, clock, fsync) as log:
        positions = [p for i in range(0, 300, 3) for p in log.append(payloads[i : i + 3])]
        end, segments = log.end_position, log.segments()
    with _open(tmp_path, SMALL, clock, fsync) as log:
        assert log.recovery.clean
        assert log.recovery.records == 300
        assert log.recovery.segments == len(segments)
        assert log.end_position == end
        assert [(s.base, s.end) for s in log.segments()] == [(s.base, s.end) for s in segments]
        assert list(log.scan(0)) == list(zip(positions, payloads, strict=True))
        assert log.append([b"more"]) == [end]


def test_retention_by_bytes_deletes_the_oldest_closed_segments(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    config = LogConfig(segment_bytes=4096, retention_bytes=3 * 4096)
    with _open(tmp_path, config, clock, fsync) as log:
        for _ in range(60):
            log.append([b"r" * 500])
        before = log.segments()
        closed_bytes = sum(s.size for s in before if s.closed)
        freed = log.apply_retention()
        after = log.segments()
        assert freed > 0
        assert sum(s.size for s in after if s.closed) == closed_bytes - freed
        assert sum(s.size for s in after if s.closed) <= 3 * 4096
        assert after == before[len(before) - len(after) :]
        assert log.start_position == after[0].base
        assert not Path(before[0].path).exists()
        with pytest.raises(NotFound):
            log.read(0)
        assert next(p for p, _ in log.scan(log.start_position)) == after[0].base
        assert log.apply_retention() == 0


def test_retention_by_age_uses_the_injected_clock_and_survives_reopen(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    config = LogConfig(segment_bytes=4096, retention_s=3600)
    with _open(tmp_path, config, clock, fsync) as log:
        for _ in range(10):  # about two segments written "now"
            log.append([b"o" * 800])
        clock.now += 1800
        for _ in range(10):  # two more, half an hour later
            log.append([b"n" * 800])
        old = [s for s in log.segments() if s.last_write_wall_s < clock.now - 1000]
        assert len(old) >= 2
        clock.now += 1900  # the first ones are now 3700 s old, the later ones 1900 s
        assert log.apply_retention() == sum(s.size for s in old)
        assert log.start_position == old[-1].end
    clock.now += 2000  # everything closed is now older than an hour
    with _open(tmp_path, config, clock, fsync) as log:
        remaining = log.segments()
        assert log.apply_retention() == sum(s.size for s in remaining[:-1])
        assert len(log.segments()) == 1  # the active segment is never deleted


def test_retention_never_deletes_the_active_segment(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    config = LogConfig(segment_bytes=4096, retention_bytes=0, retention_s=0)
    with _open(tmp_path, config, clock, fsync) as log:
        log.append([b"only"])
        assert log.apply_retention() == 0
        assert log.read(0) == b"only"


def test_delete_segments_below_a_position(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        for _ in range(50):
            log.append([b"d" * 400])
        infos = log.segments()
        # A position inside the third segment frees exactly the first two.
        freed = log.delete_segments_below(infos[2].base + 1)
        assert freed == infos[0].size + infos[1].size
        assert log.start_position == infos[2].base
        assert log.delete_segments_below(0) == 0
        assert log.delete_segments_below(10**18) == sum(s.size for s in infos[2:-1])
        assert [s.base for s in log.segments()] == [infos[-1].base]


def test_scan_reads_a_segment_deleted_under_it(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        for _ in range(30):
            log.append([b"s" * 400])
        infos = log.segments()
        scan = log.scan(0)
        first = next(scan)
        log.delete_segments_below(infos[1].end)
        seen = [first[0]]
        # The segment being read stays readable through its pin; a reclaimed
        # segment the scan had not reached yet is reported, never skipped.
        with pytest.raises(NotFound, match="reclaimed"):
            seen.extend(position for position, _ in scan)
        assert seen == list(range(0, infos[0].end, HEADER_SIZE + 400))


def test_segments_report_last_write_times(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        log.append([b"x" * 3000])
        clock.now += 10
        log.append([b"y" * 3000])
        first, second = log.segments()
        assert first.closed
        assert not second.closed
        assert second.last_write_wall_s - first.last_write_wall_s == 10


def test_close_is_idempotent_and_everything_after_it_is_refused(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    log = _open(tmp_path, SMALL, clock, fsync)
    log.append([b"x"])
    log.close()
    log.close()
    calls: list[Callable[[], object]] = [
        lambda: log.append([b"y"]),
        lambda: log.read(0),
        lambda: log.scan(0),
        log.sync,
        log.segments,
        lambda: log.delete_segments_below(1),
        log.apply_retention,
        lambda: log.start_position,
        lambda: log.end_position,
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            call()
    assert log.stats().end_position == HEADER_SIZE + 1


def test_a_scan_open_across_close_stops_with_store_closed(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    log = _open(tmp_path, SMALL, clock, fsync)
    log.append([b"a", b"b", b"c"])
    scan = log.scan(0)
    assert next(scan)[1] == b"a"
    log.close()
    with pytest.raises(StoreClosed):
        next(scan)


def test_one_directory_takes_one_open_log(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    log = _open(tmp_path, SMALL, clock, fsync)
    with pytest.raises(FailedPrecondition, match="already open"):
        _open(tmp_path, SMALL, clock, fsync)
    log.close()
    _open(tmp_path, SMALL, clock, fsync).close()


def test_always_fsyncs_before_returning(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    with _open(tmp_path, SMALL, clock, fsync) as log:
        before = log.stats().fsyncs
        [position] = log.append([b"durable"])
        stats = log.stats()
        assert stats.synced_position >= position + HEADER_SIZE + 7
        assert stats.fsyncs == before + 1


def test_a_failed_fsync_refuses_further_writes(tmp_path: Path, clock: FakeClock) -> None:
    broken = False

    def fsync(fd: int) -> None:
        if broken:
            raise OSError(5, "Input/output error")

    log = CommitLog.open(tmp_path, SMALL, wall_clock=clock, fsync=fsync)
    [kept] = log.append([b"before"])
    broken = True
    with pytest.raises(FailedPrecondition, match="Input/output error"):
        log.append([b"lost?"])
    broken = False  # even if the disk recovers, the unsynced pages may be gone
    with pytest.raises(FailedPrecondition, match="reopen it"):
        log.append([b"after"])
    assert log.read(kept) == b"before"
    log.close()
    with CommitLog.open(tmp_path, SMALL, wall_clock=clock, fsync=fsync) as reopened:
        assert reopened.read(kept) == b"before"


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("segment_bytes", 100, ">= 4096"),
        ("fsync", "sometimes", "always, interval"),
        ("fsync_interval_s", 0.0, "> 0"),
        ("retention_bytes", -1, ">= 0"),
        ("retention_s", -5.0, ">= 0"),
        ("max_record_bytes", 0, "must be in"),
    ],
)
def test_config_names_the_bad_value_and_the_rule(field: str, value: object, rule: str) -> None:
    with pytest.raises(InvalidArgument, match=rule) as info:
        LogConfig(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value)


def test_config_accepts_the_policy_as_a_string() -> None:
    assert LogConfig(fsync="interval").fsync is FsyncPolicy.INTERVAL  # type: ignore[arg-type]


def test_append_waits_says_which_appends_may_wait_for_the_disk(
    tmp_path: Path, clock: FakeClock, fsync: CountingFsync
) -> None:
    interval = LogConfig(segment_bytes=256 * 1024, fsync=FsyncPolicy.INTERVAL)
    margin = 256 * 1024 // 8  # ROTATION_MARGIN, capped at an eighth of the segment
    with _open(tmp_path / "interval", interval, clock, fsync) as log:
        assert not log.append_waits(250_000, 1)  # an empty segment takes anything
        log.append([b"x" * 100_000])
        assert not log.append_waits(1_000, 1)
        room = 256 * 1024 - log.end_position - margin - BATCH_ALLOWANCE
        assert not log.append_waits(room - RECORD_ALLOWANCE - 1, 1)
        assert log.append_waits(room - RECORD_ALLOWANCE + 1, 1)  # too near the end
        assert log.append_waits(room - 100 * RECORD_ALLOWANCE + 1, 100)  # headers count
        before = fsync.calls
        log.append([b"y" * 170_000])  # it rotates, and fsyncs
        assert fsync.calls > before
        assert not log.append_waits(1_000, 1)
        with log._lock:  # another writer holds the log (it may be fsyncing)
            assert log.append_waits(1, 1)
    assert log.append_waits(1, 1)  # closed: the caller's real call will say so
    always = LogConfig(segment_bytes=64 * 1024, fsync=FsyncPolicy.ALWAYS)
    with _open(tmp_path / "always", always, clock, fsync) as log:
        assert log.append_waits(1, 1)
