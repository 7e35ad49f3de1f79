"""The commit log: segmented, checksummed, append-only, with group commit.

A record's *position* is a global byte offset: the base of its segment plus
its offset inside the segment. Positions only grow, across segments, and the
next record always goes at :attr:`CommitLog.end_position`.

Concurrency, in one picture::

    append ──encode (no lock)──▶ _lock: rotate?, pwrite, advance _written_end
           ──ALWAYS───▶ GroupCommit.wait_durable(end): one thread leads an fsync
                        up to the highest written position; others it covers wait
           ──INTERVAL─▶ mark dirty; the flusher thread fsyncs within the interval

Writes are serialised by ``_lock`` (so file order is position order); the
fsync runs outside it, so appends keep flowing while the disk works, which is
what lets one fsync cover many appends. Lock order: ``_lock``, then a
segment's pin guard or the group commit's condition; never the reverse.

Reads pin the segment they use, so retention can unlink a file under a
reader without the reader's descriptor being closed (see ``segment.py``).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from broker.errors import FailedPrecondition, MessageTooLarge, NotFound, StoreClosed
from broker.log.durability import GroupCommit, IntervalFlusher
from broker.log.record import encode_many, frame_offsets
from broker.log.recovery import recover
from broker.log.segment import Fsync, Segment, Span, T, fsync_directory, payload_slice
from broker.log.values import (
    FsyncPolicy,
    LogConfig,
    LogLocation,
    LogStats,
    RecoveryReport,
    SegmentInfo,
    Skipped,
)

__all__ = [
    "CommitLog",
    "FsyncPolicy",
    "LogConfig",
    "LogLocation",
    "LogStats",
    "RecoveryReport",
    "SegmentInfo",
    "Skipped",
]

# What CommitLog.append_waits allows beyond the bodies: per record (frame and
# envelope headers, queue names and offsets, properties), per append (a
# producer's journal entry and such), and the room kept below a segment's end.
RECORD_ALLOWANCE = 512
BATCH_ALLOWANCE = 32 * 1024
ROTATION_MARGIN = 4 * 1024 * 1024

LOCK_FILE = ".lock"


def _lock_directory(directory: Path) -> int:
    """Take an exclusive flock so two CommitLogs never write one directory."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FailedPrecondition(
            f"log directory {directory} is already open (by this or another process); "
            "one directory takes one CommitLog at a time"
        ) from None
    return fd


class CommitLog:
    """Segmented append-only log; open it with :meth:`CommitLog.open`."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        segments: list[Segment],
        recovery: RecoveryReport,
        skipped_ranges: list[tuple[int, int]],
        *,
        wall_clock: Callable[[], float],
        fsync: Fsync,
        lock_fd: int,
    ) -> None:
        self.directory = directory
        self.config = config
        self.recovery = recovery
        self._wall_clock = wall_clock
        self._fsync_fn = fsync
        self._lock_fd = lock_fd

        self._lock = threading.Lock()  # segments, writes, _written_end, _closed, counters
        self._segments = segments
        self._bases = [s.base for s in segments]
        self._skipped = skipped_ranges
        self._written_end = segments[-1].end
        self._closed = False
        self._records = 0
        self._batches = 0
        self._bytes = 0
        self._stats_lock = threading.Lock()
        self._fsyncs = 0
        self._retention_lock = threading.Lock()  # one deleter at a time

        # Recovery fsynced whatever it kept, so everything on disk counts as synced.
        self._durable = GroupCommit(
            self._written_end, self._sync_snapshot, self._counted_fsync, str(directory)
        )
        self._flusher: IntervalFlusher | None = None
        if config.fsync is FsyncPolicy.INTERVAL:
            self._flusher = IntervalFlusher(
                config.fsync_interval_s, self.sync, name=f"commitlog-flusher:{directory}"
            )

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        fsync: Fsync = os.fsync,
    ) -> CommitLog:
        """Open (or create) the log in ``directory``, recovering as the docs of
        :mod:`broker.log.recovery` say; raises CorruptLog on mid-log corruption
        unless ``config.skip_corrupt``.

        ``fsync`` is injectable so tests can count or fail fsyncs.
        """
        directory = Path(directory)
        if not directory.is_dir():
            directory.mkdir(parents=True)
            fsync_directory(directory.parent, fsync)
        lock_fd = _lock_directory(directory)
        try:
            recovered = recover(directory, config, fsync)
            segments = recovered.segments
            if not segments:
                first = Segment.create(directory, 0)
                first.last_write_wall_s = wall_clock()
                fsync_directory(directory, fsync)
                segments = [first]
            return cls(
                directory,
                config,
                segments,
                recovered.report,
                recovered.skipped_ranges,
                wall_clock=wall_clock,
                fsync=fsync,
                lock_fd=lock_fd,
            )
        except BaseException:
            os.close(lock_fd)
            raise

    # ------------------------------------------------------------- appends

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        """Append each payload as one record; return their positions once durable per policy.

        Thread-safe. A batch is written with one write() and never spans two
        segments.
        """
        if self._closed:
            raise StoreClosed()
        if not payloads:
            return []
        limit = self.config.max_record_bytes
        if max(map(len, payloads)) > limit:
            size = next(len(p) for p in payloads if len(p) > limit)
            raise MessageTooLarge(size, limit)
        frames = encode_many(payloads)
        offsets = frame_offsets(payloads)
        with self._lock:
            self._check_writable()
            active = self._segments[-1]
            if active.size and active.size + len(frames) > self.config.segment_bytes:
                active = self._rotate()
            try:
                start = active.base + active.append_encoded(frames)
            except FailedPrecondition as exc:
                self._durable.fail(exc)
                raise
            active.last_write_wall_s = self._wall_clock()
            end = start + len(frames)
            self._written_end = end
            self._records += len(payloads)
            self._batches += 1
            self._bytes += len(frames)
        if self._flusher is None:
            self._durable.wait_durable(end)
        else:
            self._flusher.mark_dirty()
        return [start + offset for offset in offsets]

    def append_waits(self, nbytes: int, records: int) -> bool:
        """Whether appending ``records`` records of about ``nbytes`` may wait for the disk.

        Under ``always`` every append waits for an fsync. Under ``interval``
        the append that fills the active segment does: a rotation fsyncs the
        old segment and the directory before the new one takes writes. The
        estimate allows each record its headers, names and properties
        (:data:`RECORD_ALLOWANCE`) and keeps a margin below the segment's end
        (:data:`ROTATION_MARGIN`, at most an eighth of a segment), so an
        append that rotates is never judged not to. A log another thread is
        writing (it may be rotating) counts as waiting too.
        """
        if self._flusher is None or self._closed:
            return True  # a closed log: the pool's call raises StoreClosed
        framed = nbytes + records * RECORD_ALLOWANCE + BATCH_ALLOWANCE
        margin = min(ROTATION_MARGIN, self.config.segment_bytes // 8)
        if not self._lock.acquire(blocking=False):
            return True
        try:
            active = self._segments[-1]
            return bool(active.size) and active.size + framed + margin > self.config.segment_bytes
        finally:
            self._lock.release()

    def sync(self) -> None:
        """Make everything appended so far durable, whatever the policy."""
        if self._closed:
            raise StoreClosed()
        self._durable.wait_durable(self._written_end)

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreClosed()
        failure = self._durable.failure
        if failure is not None:
            raise self._durable.refusal() from failure

    def _rotate(self) -> Segment:
        """Start a new segment (caller holds ``_lock``); the old one is made durable first."""
        old = self._segments[-1]
        try:
            self._counted_fsync(old)
            old.set_mtime(old.last_write_wall_s)
            new = Segment.create(self.directory, old.end)
            fsync_directory(self.directory, self._fsync_fn)
        except OSError as exc:
            self._durable.fail(exc)
            raise
        new.last_write_wall_s = self._wall_clock()
        self._segments.append(new)
        self._bases.append(new.base)
        self._durable.advance(old.end)
        return new

    def _counted_fsync(self, segment: Segment) -> None:
        segment.fsync(self._fsync_fn)
        with self._stats_lock:
            self._fsyncs += 1

    def _sync_snapshot(self) -> tuple[Segment | None, int]:
        """For the group-commit leader: the active segment, pinned, and the written end."""
        with self._lock:
            segment = self._segments[-1]
            return (segment if segment.pin() else None), self._written_end

    # --------------------------------------------------------------- reads

    @property
    def start_position(self) -> int:
        """First retained position."""
        with self._lock:
            self._check_open()
            return self._bases[0]

    @property
    def end_position(self) -> int:
        """Where the next record goes."""
        with self._lock:
            self._check_open()
            return self._written_end

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    def read(self, position: int) -> bytes:
        """Payload of the record at ``position``.

        NotFound below start_position (reclaimed), at or past end_position,
        or inside a corrupt stretch skipped on open; CorruptLog when no valid
        record starts at ``position``.
        """
        with self._lock:
            self._check_open()
            self._check_position(position)
            segment = self._segments[bisect_right(self._bases, position) - 1]
            segment.pin()
        try:
            return segment.read_at(
                position - segment.base, max_record_bytes=self.config.max_record_bytes
            )
        finally:
            segment.unpin()

    def read_many(self, positions: Sequence[int], *, nowait: bool = False) -> list[bytes | None]:
        """Payloads of the records at ``positions``, in order; None where :meth:`read`
        would raise NotFound. CorruptLog as :meth:`read`. ``nowait``: only from the
        page cache, else BlockingIOError (see :meth:`Segment.read_many`).

        One lock round and one pin per segment for the lot, and nearby records
        share a pread (see :meth:`Segment.read_many`): the consumer's read path.
        """
        return self.read_parsed(positions, payload_slice, nowait=nowait)

    def read_parsed(
        self,
        positions: Sequence[int],
        parse: Callable[[bytes, int, int], T],
        *,
        nowait: bool = False,
    ) -> list[T | None]:
        """:meth:`read_many` with each payload given to ``parse`` in place (see
        :meth:`Segment.read_parsed`) instead of copied out."""
        out: list[T | None] = [None] * len(positions)
        if not positions:
            return out
        groups: dict[int, tuple[Segment, list[int], list[int]]] = {}
        with self._lock:
            self._check_open()
            runs = self._common_runs(positions)
            if runs is None:
                self._place(positions, self._bases[0], self._written_end, groups)
        try:
            limit = self.config.max_record_bytes
            if runs is not None:
                for segment, first, offsets in runs:
                    out[first : first + len(offsets)] = segment.read_parsed(
                        offsets, parse, max_record_bytes=limit, nowait=nowait
                    )
                return out
            for segment, slots, offsets in groups.values():
                for slot, parsed in zip(
                    slots,
                    segment.read_parsed(offsets, parse, max_record_bytes=limit, nowait=nowait),
                    strict=True,
                ):
                    out[slot] = parsed
        finally:
            for segment, _, _ in runs if runs is not None else groups.values():
                segment.unpin()
        return out

    def read_raw(self, position: int, size: int, *, nowait: bool = False) -> bytes | None:
        """Up to ``size`` raw bytes from ``position`` on, fewer where its segment
        or the written log ends; None where ``position`` is not in the log, or
        the log skipped a corrupt stretch on open (ask :meth:`read`). Nothing is
        checked: the caller walks the frames in them. ``nowait`` as
        :meth:`read_parsed` says."""
        with self._lock:
            self._check_open()
            if self._skipped or not self._bases[0] <= position < self._written_end:
                return None
            segment = self._segments[bisect_right(self._bases, position) - 1]
            segment.pin()
            size = min(size, self._written_end - position)
        try:
            return segment.read_raw(position - segment.base, size, nowait=nowait)
        finally:
            segment.unpin()

    def read_spans(self, positions: Sequence[int], *, nowait: bool = False) -> list[Span] | None:
        """The raw bytes around ascending, retained ``positions`` (a queue's
        records in log order, the consumer's common read): :meth:`Segment.spans`
        of each segment they fall in, each span's start made absolute. None
        where the positions are not that (out of order, below the start, at or
        past the end, or near a corrupt stretch skipped on open): ask
        :meth:`read_parsed`, which sorts those out.

        The caller checks each frame (see :func:`record.payload_end`) and reads
        one that a span does not hold whole with :meth:`read`. ``nowait`` as
        :meth:`read_parsed` says.
        """
        if not positions:
            return []
        with self._lock:
            self._check_open()
            runs = self._common_runs(positions)
            if runs is None:
                return None
        out: list[Span] = []
        try:
            for segment, first, offsets in runs:
                base = segment.base
                out += [
                    (data, base + low, first + i, first + j)
                    for data, low, i, j in segment.spans(offsets, nowait=nowait)
                ]
        finally:
            for segment, _, _ in runs:
                segment.unpin()
        return out

    def _common_runs(self, positions: Sequence[int]) -> list[tuple[Segment, int, list[int]]] | None:
        """Under the lock, for the common read (a queue's records: ascending, all
        retained, no corrupt stretch skipped on open): :meth:`_runs` of
        ``positions``, one per segment found by bisection instead of placing
        each position on its own. None for any other read."""
        if (
            self._skipped
            or positions[0] < self._bases[0]
            or positions[-1] >= self._written_end
            or (ordered := list(positions)) != sorted(ordered)
        ):
            return None
        return self._runs(ordered)

    def _runs(self, positions: list[int]) -> list[tuple[Segment, int, list[int]]]:
        """Under the lock: ascending ``positions`` (all retained) as (segment,
        index of its first position, offsets relative to it), segments pinned."""
        bases = self._bases
        runs: list[tuple[Segment, int, list[int]]] = []
        i, count = 0, len(positions)
        while i < count:
            at = bisect_right(bases, positions[i]) - 1
            stop = bisect_left(positions, bases[at + 1], i) if at + 1 < len(bases) else count
            segment = self._segments[at]
            segment.pin()
            base = segment.base
            runs.append((segment, i, [p - base for p in positions[i:stop]]))
            i = stop
        return runs

    def _place(
        self,
        positions: Sequence[int],
        start: int,
        end: int,
        groups: dict[int, tuple[Segment, list[int], list[int]]],
    ) -> None:
        """Under the lock: each of ``positions`` into ``groups`` by segment (slots
        and relative offsets), segments pinned; those NotFound are left out."""
        bases = self._bases
        last = len(bases) - 1
        for i, position in enumerate(positions):
            if self._skipped or not start <= position < end:
                try:
                    self._check_position(position)
                except NotFound:
                    continue
            at = last if position >= bases[last] else bisect_right(bases, position) - 1
            group = groups.get(at)
            if group is None:
                segment = self._segments[at]
                segment.pin()
                group = groups[at] = (segment, [], [])
            group[1].append(i)
            group[2].append(position - group[0].base)

    def _check_position(self, position: int) -> None:
        start, end = self._bases[0], self._written_end
        if not start <= position < end:
            raise NotFound(
                f"log position {position} is outside the retained range [{start}, {end})"
            )
        index = bisect_right(self._skipped, position, key=lambda r: r[0]) - 1
        if index >= 0 and self._skipped[index][0] <= position < self._skipped[index][1]:
            low, high = self._skipped[index]
            raise NotFound(
                f"log position {position} lies in the corrupt stretch [{low}, {high}) "
                "skipped on open"
            )

    def scan(self, start: int) -> Iterator[tuple[int, bytes]]:
        """Every (position, payload) from ``start`` to the end as of this call.

        ``start`` must be a record position in [start_position, end_position];
        corrupt stretches skipped on open are stepped over.
        """
        with self._lock:
            self._check_open()
            low, end = self._bases[0], self._written_end
            if not low <= start <= end:
                raise NotFound(f"scan start {start} is outside the retained range [{low}, {end}]")
            first = max(bisect_right(self._bases, start) - 1, 0)
            segments = self._segments[first:]
            skipped = list(self._skipped)
        return self._scan(start, end, segments, skipped)

    def _scan(
        self,
        start: int,
        end: int,
        segments: list[Segment],
        skipped: list[tuple[int, int]],
    ) -> Iterator[tuple[int, bytes]]:
        limit = self.config.max_record_bytes
        for segment in segments:
            if segment.base >= end:
                return
            if not segment.pin():
                if self._closed:
                    raise StoreClosed()
                raise NotFound(f"segment {segment.path} was reclaimed while a scan read it")
            try:
                pos = max(start, segment.base)
                stop = min(segment.end, end)
                # Read the good stretches between skipped ones; (stop, stop) closes the last.
                for low, high in [*skipped, (stop, stop)]:
                    if high <= pos:
                        continue
                    upto = min(max(low, pos), stop)
                    for offset, payload in segment.records(
                        pos - segment.base, upto - segment.base, max_record_bytes=limit
                    ):
                        if self._closed:
                            raise StoreClosed()
                        yield segment.base + offset, payload
                    pos = max(pos, high)
                    if pos >= stop:
                        break
            finally:
                segment.unpin()

    # ----------------------------------------------------------- retention

    def segments(self) -> list[SegmentInfo]:
        """Every retained segment, oldest first; the last one is the active one."""
        with self._lock:
            self._check_open()
            last = len(self._segments) - 1
            return [
                SegmentInfo(s.base, s.end, s.path, s.last_write_wall_s, i != last)
                for i, s in enumerate(self._segments)
            ]

    def delete_segments_below(self, position: int) -> int:
        """Delete closed segments whose end <= ``position``; return the bytes freed."""
        with self._retention_lock:
            with self._lock:
                self._check_open()
                count = 0
                while count < len(self._segments) - 1 and self._segments[count].end <= position:
                    count += 1
                victims = self._detach(count)
            return self._remove(victims)

    def apply_retention(self) -> int:
        """Delete the oldest closed segments beyond retention_s / retention_bytes.

        Never the active segment, and always a prefix, so the log stays
        contiguous. Returns the bytes freed.
        """
        with self._retention_lock:
            with self._lock:
                self._check_open()
                closed = self._segments[:-1]
                count = 0
                if self.config.retention_s is not None:
                    now = self._wall_clock()
                    while (
                        count < len(closed)
                        and now - closed[count].last_write_wall_s >= self.config.retention_s
                    ):
                        count += 1
                if self.config.retention_bytes is not None:
                    kept = sum(s.size for s in closed[count:])
                    while count < len(closed) and kept > self.config.retention_bytes:
                        kept -= closed[count].size
                        count += 1
                victims = self._detach(count)
            return self._remove(victims)

    def _detach(self, count: int) -> list[Segment]:
        """Drop the first ``count`` segments from the log (caller holds ``_lock``)."""
        victims = self._segments[:count]
        if victims:
            del self._segments[:count]
            del self._bases[:count]
            start = self._bases[0]
            self._skipped = [(low, high) for low, high in self._skipped if high > start]
        return victims

    def _remove(self, victims: list[Segment]) -> int:
        """Unlink detached segments; readers still pinning one keep its descriptor."""
        freed = 0
        for segment in victims:
            freed += segment.size
            segment.retire()
            segment.path.unlink(missing_ok=True)
        if victims:
            fsync_directory(self.directory, self._fsync_fn)
        return freed

    # ------------------------------------------------------------ lifecycle

    def stats(self) -> LogStats:
        """Counters for metrics; works after close too (a scrape may race shutdown)."""
        with self._lock:
            start, end, count = self._bases[0], self._written_end, len(self._segments)
            records, batches, written = self._records, self._batches, self._bytes
        synced = self._durable.synced_end
        with self._stats_lock:
            fsyncs = self._fsyncs
        return LogStats(start, end, synced, count, records, batches, written, fsyncs)

    def close(self) -> None:
        """Flush, fsync and release everything. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._flusher is not None:
            self._flusher.stop()
        try:
            if self._durable.failure is None:
                self._durable.wait_durable(self._written_end)
        finally:
            with self._lock:
                for segment in self._segments:
                    segment.retire()
            os.close(self._lock_fd)

    def __enter__(self) -> CommitLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CommitLog(directory={str(self.directory)!r}, fsync={self.config.fsync.value})"
