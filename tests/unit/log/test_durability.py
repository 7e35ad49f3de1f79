"""Group commit under ALWAYS and the background flusher under INTERVAL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from broker.log import CommitLog, FsyncPolicy, LogConfig
from broker.log.record import HEADER_SIZE
from tests.unit.log.conftest import CountingFsync, FakeClock

WAIT_S = 10.0  # generous upper bound for threads to get somewhere; tests never wait it out


def _eventually(predicate: Callable[[], bool]) -> None:
    """Wait (in short steps, bounded) for a background thread to make ``predicate`` true."""
    deadline = time.monotonic() + WAIT_S
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "the background thread never got there"
        pause.wait(0.002)


def test_one_fsync_covers_every_appender_that_wrote_while_it_ran(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Deterministic group commit: the first fsync is held until all N have written.

    The first leader's fsync covers only its own batch (it snapshotted before
    the others wrote); the next leader finds all N written and covers them in
    one fsync. So N appends cost exactly 2 fsyncs.
    """
    appenders = 12
    release = threading.Event()
    calls: list[int] = []
    log: CommitLog

    def held_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            _eventually(lambda: log.stats().batches_appended == appenders)
            release.set()

    # Create the log first, so the held fsync is a segment's, not the directory's.
    CommitLog.open(tmp_path, LogConfig(), wall_clock=clock, fsync=lambda fd: None).close()
    log = CommitLog.open(tmp_path, LogConfig(), wall_clock=clock, fsync=held_fsync)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def appender(index: int) -> None:
        try:
            results[index] = log.append([f"from {index}".encode()] * 3)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(appenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors
    assert release.is_set()
    assert log.stats().fsyncs == 2
    positions = sorted(p for batch in results.values() for p in batch)
    assert len(positions) == len(set(positions)) == appenders * 3
    assert log.stats().synced_position == log.end_position
    log.close()


def test_many_threads_share_fsyncs_and_get_distinct_positions(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Free-running: with real fsyncs, concurrent appenders still share them."""
    threads_n, per_thread = 8, 40
    log = CommitLog.open(tmp_path, LogConfig(segment_bytes=64 * 1024), wall_clock=clock)
    results: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(threads_n)}
    start = threading.Barrier(threads_n)

    def appender(index: int) -> None:
        start.wait()
        for n in range(per_thread):
            payload = f"t{index}-{n}".encode()
            [position] = log.append([payload])
            results[index].append((position, payload))

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 6)
    appended = [item for items in results.values() for item in items]
    assert len(appended) == threads_n * per_thread
    assert len({p for p, _ in appended}) == len(appended)
    # Each thread's records are in its own order.
    for items in results.values():
        assert [p for p, _ in items] == sorted(p for p, _ in items)
    assert sorted(appended) == list(log.scan(0))
    stats = log.stats()
    assert stats.fsyncs < stats.batches_appended == threads_n * per_thread
    log.close()


def test_interval_returns_before_fsync_and_the_flusher_catches_up(
    tmp_path: Path, clock: FakeClock
) -> None:
    fsync = CountingFsync()
    config = LogConfig(fsync=FsyncPolicy.INTERVAL, fsync_interval_s=0.01)
    log = CommitLog.open(tmp_path, config, wall_clock=clock, fsync=fsync)
    [position] = log.append([b"soon durable"])
    end = position + HEADER_SIZE + 12
    _eventually(lambda: log.stats().synced_position >= end)
    assert log.stats().fsyncs >= 1
    log.close()


def test_interval_close_syncs_what_the_flusher_has_not(tmp_path: Path, clock: FakeClock) -> None:
    fsync = CountingFsync()
    config = LogConfig(fsync=FsyncPolicy.INTERVAL, fsync_interval_s=3600)
    log = CommitLog.open(tmp_path, config, wall_clock=clock, fsync=fsync)
    log.append([b"a"] * 10)
    stats = log.stats()
    assert stats.synced_position < stats.end_position
    log.close()  # must not wait out the hour
    assert log.stats().synced_position == log.stats().end_position


def test_sync_forces_durability_under_interval(tmp_path: Path, clock: FakeClock) -> None:
    fsync = CountingFsync()
    config = LogConfig(fsync=FsyncPolicy.INTERVAL, fsync_interval_s=3600)
    with CommitLog.open(tmp_path, config, wall_clock=clock, fsync=fsync) as log:
        log.append([b"x"])
        log.sync()
        assert log.stats().synced_position == log.end_position
