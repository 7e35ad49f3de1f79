"""One segment file of the commit log.

A segment is named by the global position of its first byte, 20 zero-padded
digits and ``.log``, so the directory listing sorts in log order and a
position maps to its file with a bisect. Positions inside a segment are byte
offsets ("relative offsets"); a record's global position is base + offset.

The segment does no locking of its own writes: the commit log serialises
appends. What it does guard is its file descriptor, because reads, fsyncs and
retention can race: a reader *pins* the segment, and :meth:`Segment.retire`
closes the descriptor only once the last pin is released, so a pread can
never land on a closed (or, worse, reused) descriptor.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from broker.errors import CorruptLog, FailedPrecondition
from broker.log import record

__all__ = [
    "SEGMENT_SUFFIX",
    "Damage",
    "Segment",
    "SegmentCheck",
    "Span",
    "fsync_directory",
    "parse_segment_name",
    "segment_name",
]

SEGMENT_SUFFIX = ".log"
_NAME = re.compile(r"^(\d{20})\.log$")

# Recovery reads this much at a time: big enough that syscalls vanish from
# the profile, small enough to stay in cache.
_BLOCK = 4 * 1024 * 1024
# A read guesses the record fits here, so most reads are one pread.
_READ_GUESS = 4096
# A batch read covers records this close together with one pread.
_SPAN = 1024 * 1024

T = TypeVar("T")
# (bytes read, where they start, the slice i:j of the offsets asked that start in them)
Span = tuple[bytes, int, int, int]


def payload_slice(buf: bytes, start: int, end: int) -> bytes:
    """The payload itself: what :meth:`Segment.read_many` parses records into."""
    return buf[start:end]


Fsync = Callable[[int], None]


def segment_name(base: int) -> str:
    """File name of the segment whose first byte is at global position ``base``."""
    if not 0 <= base < 10**20:
        raise ValueError(f"segment base {base} must be in [0, 10**20)")
    return f"{base:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """Base position encoded in a segment file name, or None for other files."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def fsync_directory(directory: Path, fsync: Fsync = os.fsync) -> None:
    """Make a file creation, deletion or rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes ``[offset, end)`` of a segment that hold no valid record."""

    offset: int
    end: int
    reason: str


@dataclass(frozen=True, slots=True)
class SegmentCheck:
    """What the open-time scan of one segment found.

    ``valid_end`` is where the data ends once a torn tail is cut off;
    ``torn_at`` is the offset of the torn tail (None if there was none);
    ``damaged`` lists the corrupt stretches that were skipped.
    """

    valid_end: int
    torn_at: int | None
    damaged: tuple[Damage, ...]
    records: int


class Segment:
    """An open segment file: append at its end, read anywhere, fsync, scan."""

    def __init__(self, path: Path, base: int, fd: int, size: int) -> None:
        self.path = path
        self.base = base
        self._fd = fd
        self._size = size
        self._pins = 0
        self._retired = False
        # Wall-clock time of the last append; the commit log keeps it and
        # retention by age reads it. Opened segments start from the file's mtime.
        self.last_write_wall_s = 0.0
        self._guard = threading.Lock()

    # ----------------------------------------------------------- lifecycle

    @classmethod
    def create(cls, directory: Path, base: int) -> Segment:
        """Create a new, empty segment file (the caller fsyncs the directory)."""
        path = directory / segment_name(base)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        return cls(path, base, fd, 0)

    @classmethod
    def open(cls, path: Path) -> Segment:
        """Open an existing segment file; the name must be a segment name."""
        base = parse_segment_name(path.name)
        if base is None:
            raise ValueError(f"{path.name!r} is not a segment file name (20 digits + .log)")
        fd = os.open(path, os.O_RDWR)
        try:
            stat = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        segment = cls(path, base, fd, stat.st_size)
        segment.last_write_wall_s = stat.st_mtime
        return segment

    @property
    def size(self) -> int:
        """Bytes of log data in the segment."""
        return self._size

    @property
    def end(self) -> int:
        """Global position just past the segment's last byte."""
        return self.base + self._size

    def pin(self) -> bool:
        """Hold the descriptor open until :meth:`unpin`; False if already retired."""
        with self._guard:
            if self._retired:
                return False
            self._pins += 1
            return True

    def unpin(self) -> None:
        with self._guard:
            self._pins -= 1
            close_now = self._retired and self._pins == 0
        if close_now:
            os.close(self._fd)

    def retire(self) -> None:
        """Close the descriptor as soon as no pin holds it. Idempotent."""
        with self._guard:
            if self._retired:
                return
            self._retired = True
            close_now = self._pins == 0
        if close_now:
            os.close(self._fd)

    # ------------------------------------------------------------- writing

    def append(self, payload: bytes) -> int:
        """Frame and append one record; returns its relative offset."""
        return self.append_encoded(record.encode(payload))

    def append_encoded(self, frames: bytes) -> int:
        """Append already-framed bytes; returns the relative offset where they start.

        If the write fails part way, the file is cut back to its old size so
        the next append does not land after half a record; if even that fails
        the error says the segment can no longer be trusted.
        """
        start = self._size
        view = memoryview(frames)
        written = 0
        try:
            while written < len(view):
                written += os.pwrite(self._fd, view[written:], start + written)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError as cut:
                raise FailedPrecondition(
                    f"write to {self.path} failed ({exc}) and cutting it back to "
                    f"{start} bytes failed too ({cut}); the segment needs recovery"
                ) from exc
            raise
        self._size = start + len(view)
        return start

    def fsync(self, fsync: Fsync = os.fsync) -> None:
        fsync(self._fd)

    def truncate(self, size: int, fsync: Fsync = os.fsync) -> None:
        """Cut the file to ``size`` bytes and make the cut durable."""
        os.ftruncate(self._fd, size)
        fsync(self._fd)
        self._size = size

    def set_mtime(self, wall_s: float) -> None:
        """Record the last write time in the file, so retention by age survives reopen."""
        os.utime(self._fd, (wall_s, wall_s))

    def clip(self, size: int) -> None:
        """Treat only the first ``size`` bytes as this segment's data (the file is kept).

        Used when a segment overlaps the next one: the overlap is reported and
        left on disk for inspection rather than destroyed.
        """
        self._size = min(self._size, size)

    # ------------------------------------------------------------- reading

    def read_at(self, offset: int, *, max_record_bytes: int = record.MAX_PAYLOAD_BYTES) -> bytes:
        """Payload of the record at relative ``offset``, CRC checked.

        Raises CorruptLog when no valid record starts there, which is also
        what a position that is not a record start looks like.
        """
        if not 0 <= offset < self._size:
            raise ValueError(f"offset {offset} is outside segment {self.path} of {self._size} B")
        limit = self._size - offset
        data = os.pread(self._fd, min(_READ_GUESS, limit), offset)
        decoded = record.decode(data, 0, max_record_bytes=max_record_bytes)
        if isinstance(decoded, record.Incomplete) and len(data) < limit:
            wanted = min(len(data) + decoded.missing, limit)
            data = os.pread(self._fd, wanted, offset)
            decoded = record.decode(data, 0, max_record_bytes=max_record_bytes)
        if isinstance(decoded, record.Frame):
            return decoded.payload
        if isinstance(decoded, record.Incomplete):
            raise CorruptLog(
                self.path, offset, "record runs past the end of the segment (not a record start?)"
            )
        raise CorruptLog(self.path, offset, f"{decoded.reason} (not a record start?)")

    def read_many(
        self,
        offsets: Sequence[int],
        *,
        max_record_bytes: int = record.MAX_PAYLOAD_BYTES,
        nowait: bool = False,
    ) -> list[bytes]:
        """Payloads of the records at relative ``offsets``, as :meth:`read_at` would give
        (see :meth:`read_parsed`)."""
        return self.read_parsed(
            offsets, payload_slice, max_record_bytes=max_record_bytes, nowait=nowait
        )

    def read_parsed(
        self,
        offsets: Sequence[int],
        parse: Callable[[bytes, int, int], T],
        *,
        max_record_bytes: int = record.MAX_PAYLOAD_BYTES,
        nowait: bool = False,
    ) -> list[T]:
        """``parse(buf, start, end)`` of each record at relative ``offsets``, its
        payload being ``buf[start:end]``, checked as :meth:`read_at` checks it.

        A consumer reads a queue's records in log order, and records published
        together lie side by side, so ascending offsets within ``_SPAN`` of
        each other share one pread (one syscall and one copy for hundreds of
        records instead of one each). A record the span does not hold whole
        is read alone.

        ``nowait``: read only what the page cache holds (``preadv`` with
        ``RWF_NOWAIT``); BlockingIOError when anything would need the disk.
        """
        out: list[T] = []
        append = out.append
        payload_end = record.payload_end
        skip = record.HEADER_SIZE
        for data, low, i, j in self.spans(offsets, nowait=nowait):
            view = memoryview(data)
            for offset in offsets[i:j]:
                at = offset - low
                end = payload_end(data, view, at, max_record_bytes)
                if end >= 0:
                    append(parse(data, at + skip, end))
                    continue
                if nowait:  # a record longer than the guess: read alone, may wait
                    raise BlockingIOError(errno.EAGAIN, "a record past the cached span")
                payload = self.read_at(offset, max_record_bytes=max_record_bytes)
                append(parse(payload, 0, len(payload)))
            view.release()
        return out

    def read_raw(self, offset: int, size: int, *, nowait: bool = False) -> bytes:
        """Up to ``size`` bytes at relative ``offset``, fewer at the segment's
        end; unchecked (the caller checks the frames in them). ``nowait`` as in
        :meth:`read_parsed`."""
        if not 0 <= offset < self._size:
            raise ValueError(f"offset {offset} is outside segment {self.path} of {self._size} B")
        return self._pread(min(size, self._size - offset), offset, nowait=nowait)

    def _pread(self, size: int, offset: int, *, nowait: bool) -> bytes:
        """``size`` bytes at relative ``offset``; ``nowait``: only from the page
        cache (BlockingIOError otherwise, see :func:`_read_cached`)."""
        return _read_cached(self._fd, size, offset) if nowait else os.pread(self._fd, size, offset)

    def spans(self, offsets: Sequence[int], *, nowait: bool = False) -> list[Span]:
        """The bytes around the records at relative ``offsets``, read in as few
        preads as :meth:`read_parsed` says: (data, its relative offset, and the
        slice ``i:j`` of ``offsets`` that starts in it), in order.

        A record starts at ``offset - low`` in ``data`` but may run past its
        end (the read guesses :data:`_READ_GUESS` bytes past the last start);
        nothing here is checked. ``nowait`` as in :meth:`read_parsed`.
        """
        out: list[Span] = []
        size = self._size
        count = len(offsets)
        i = 0
        while i < count:
            low = offsets[i]
            if not 0 <= low < size:
                raise ValueError(f"offset {low} is outside segment {self.path} of {size} B")
            j = i + 1
            while j < count and low <= offsets[j - 1] <= offsets[j] < low + _SPAN:
                j += 1
            high = min(size, offsets[j - 1] + _READ_GUESS)
            out.append((self._pread(high - low, low, nowait=nowait), low, i, j))
            i = j
        return out

    def records(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        max_record_bytes: int = record.MAX_PAYLOAD_BYTES,
    ) -> Iterator[tuple[int, bytes]]:
        """Every (relative offset, payload) in ``[start, stop)``, read in big blocks.

        ``start`` must be a record start; a record that fails its checks
        raises CorruptLog naming this file and the record's offset.
        """
        stop = self._size if stop is None else stop
        pos = start
        while pos < stop:
            block = os.pread(self._fd, min(_BLOCK, stop - pos), pos)
            at = 0
            while True:
                if not block:
                    raise CorruptLog(self.path, pos, "segment file is shorter than its log data")
                decoded = record.decode(block, at, max_record_bytes=max_record_bytes)
                if isinstance(decoded, record.Frame):
                    yield pos + at, decoded.payload
                    at = decoded.end
                    if at == len(block):
                        break
                    continue
                if isinstance(decoded, record.Corrupt):
                    raise CorruptLog(self.path, pos + at, decoded.reason)
                if pos + at + decoded.missing + (len(block) - at) > stop:
                    raise CorruptLog(self.path, pos + at, "record runs past the end of the data")
                if at == 0:
                    # One record bigger than a block: read exactly that record.
                    bigger = os.pread(self._fd, len(block) + decoded.missing, pos)
                    if len(bigger) <= len(block):
                        raise CorruptLog(self.path, pos, "segment file is shorter than its data")
                    block = bigger
                    continue
                break
            pos += at

    # ------------------------------------------------------------ recovery

    def check(self, *, is_last: bool, skip_corrupt: bool, max_record_bytes: int) -> SegmentCheck:
        """Scan every record; classify what does not verify.

        A stretch that fails with no valid record anywhere after it, in the
        last segment, is a torn tail: an append that the crash cut short (or a
        zero-filled tail the file system left). Anything else that fails is
        corruption: it raises CorruptLog, or with ``skip_corrupt`` is listed
        in ``damaged`` and scanning resumes at the next valid record.
        """
        damaged: list[Damage] = []
        pos = 0
        records = 0
        while True:
            pos, count, stop = self._walk_from(pos, max_record_bytes)
            records += count
            if stop is None:
                return SegmentCheck(self._size, None, tuple(damaged), records)
            reason = (
                stop.reason
                if isinstance(stop, record.Corrupt)
                else f"record needs {stop.missing} more bytes than the segment holds"
            )
            resume = self._resync(stop.offset + 1, max_record_bytes)
            if resume is None and is_last:
                return SegmentCheck(stop.offset, stop.offset, tuple(damaged), records)
            if not skip_corrupt:
                raise CorruptLog(self.path, stop.offset, reason)
            end = self._size if resume is None else resume
            damaged.append(Damage(stop.offset, end, reason))
            if resume is None:
                return SegmentCheck(self._size, None, tuple(damaged), records)
            pos = resume

    def _walk_from(
        self, pos: int, max_record_bytes: int
    ) -> tuple[int, int, record.Incomplete | record.Corrupt | None]:
        """Walk valid records from ``pos`` to the first failure or the end of file."""
        size = self._size
        count = 0
        buf = bytearray(_BLOCK)
        while pos < size:
            want = min(len(buf), size - pos)
            view = memoryview(buf)
            try:
                got = os.preadv(self._fd, [view[:want]], pos)
                result = record.walk(view, 0, got, max_record_bytes)
            finally:
                view.release()
            count += result.count
            if result.stop is None:
                pos += got
                continue
            if isinstance(result.stop, record.Corrupt):
                return pos + result.end, count, record.Corrupt(pos + result.end, result.stop.reason)
            # Incomplete inside this block: either the file ends there, or the
            # record straddles the block edge and a read from its start fixes it.
            needed = result.end + (got - result.end) + result.stop.missing
            if pos + needed > size or got < want:
                return (
                    pos + result.end,
                    count,
                    record.Incomplete(pos + result.end, pos + needed - size),
                )
            pos += result.end
            if needed - result.end > len(buf):
                buf = bytearray(needed - result.end)
        return pos, count, None

    def _resync(self, start: int, max_record_bytes: int) -> int | None:
        if start >= self._size:
            return None
        with mmap.mmap(self._fd, self._size, access=mmap.ACCESS_READ) as mapped:
            return record.resync(mapped, start, max_record_bytes)

    def __repr__(self) -> str:
        return f"Segment(base={self.base}, size={self._size}, path={str(self.path)!r})"


_NOWAIT = getattr(os, "RWF_NOWAIT", None)  # Linux 4.14+


def _read_cached(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` if the page cache holds them all, without
    waiting for the disk; BlockingIOError otherwise (also where the kernel or
    the file system cannot tell)."""
    if _NOWAIT is None:
        raise BlockingIOError(errno.EAGAIN, "RWF_NOWAIT is not available here")
    buf = bytearray(size)
    try:
        got = os.preadv(fd, [buf], offset, _NOWAIT)
    except BlockingIOError:
        raise
    except OSError as exc:  # EOPNOTSUPP and the like: cannot tell, so assume it waits
        raise BlockingIOError(errno.EAGAIN, f"cannot read without waiting: {exc}") from exc
    if got < size:
        raise BlockingIOError(errno.EAGAIN, "only part of the span is cached")
    return bytes(buf)
