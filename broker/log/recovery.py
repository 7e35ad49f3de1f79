"""Open-time recovery: scan every segment, cut a torn tail, refuse or skip corruption.

The rules, in the order they are applied:

1. Segments are the ``<20 digits>.log`` files of the directory, in base order.
2. Each segment must end exactly where the next one begins. A gap or an
   overlap is corruption (reported at the byte where the mismatch starts).
3. Every record is checked (length bound, version, CRC32C). In the *last*
   segment, a failing record with no valid record anywhere after it is a torn
   tail — the write a crash interrupted, or a zero-filled tail — and is cut
   off. Anything else is corruption.
4. Corruption raises :class:`~broker.errors.CorruptLog` naming the file and
   offset, unless ``skip_corrupt`` is set; then the stretch up to the next
   valid record is left in place, listed in the report, and reads of it
   answer NotFound.

Nothing is modified until every segment has been checked, so a refused open
leaves the files exactly as it found them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from broker.errors import CorruptLog
from broker.log.segment import Fsync, Segment, SegmentCheck, parse_segment_name
from broker.log.values import LogConfig, LogLocation, RecoveryReport, Skipped

__all__ = ["Recovered", "recover"]


@dataclass(frozen=True, slots=True)
class Recovered:
    """Open segments in base order, the report, and the skipped global ranges."""

    segments: list[Segment]
    report: RecoveryReport
    skipped_ranges: list[tuple[int, int]]


def _segment_paths(directory: Path) -> list[tuple[int, Path]]:
    found: list[tuple[int, Path]] = []
    for entry in os.scandir(directory):
        base = parse_segment_name(entry.name)
        if base is not None and entry.is_file(follow_symlinks=False):
            found.append((base, Path(entry.path)))
    found.sort()
    return found


def recover(directory: Path, config: LogConfig, fsync: Fsync) -> Recovered:
    """Open and check every segment in ``directory``; see the module docstring."""
    paths = _segment_paths(directory)
    opened: list[Segment] = []
    try:
        return _recover(paths, config, fsync, opened)
    except BaseException:
        for segment in opened:
            segment.retire()
        raise


def _recover(
    paths: list[tuple[int, Path]], config: LogConfig, fsync: Fsync, opened: list[Segment]
) -> Recovered:
    skipped: list[Skipped] = []
    ranges: list[tuple[int, int]] = []
    checks: list[SegmentCheck] = []
    scanned = 0
    for index, (_base, path) in enumerate(paths):
        segment = Segment.open(path)
        opened.append(segment)
        scanned += segment.size
        is_last = index == len(paths) - 1
        if not is_last:
            _check_boundary(segment, paths[index + 1][0], config, skipped, ranges)
        check = segment.check(
            is_last=is_last,
            skip_corrupt=config.skip_corrupt,
            max_record_bytes=config.max_record_bytes,
        )
        checks.append(check)
        for damage in check.damaged:
            skipped.append(Skipped(path, damage.offset, damage.reason))
            ranges.append((segment.base + damage.offset, segment.base + damage.end))

    # Every segment passed (or was allowed to skip): now it is safe to cut.
    truncated = 0
    torn_at: LogLocation | None = None
    if opened and checks[-1].torn_at is not None:
        last = opened[-1]
        truncated = last.size - checks[-1].valid_end
        torn_at = LogLocation(last.path, checks[-1].torn_at)
        last.truncate(checks[-1].valid_end, fsync)

    ranges.sort()
    report = RecoveryReport(
        truncated_bytes=truncated,
        torn_tail_at=torn_at,
        skipped=tuple(skipped),
        segments=len(opened),
        records=sum(c.records for c in checks),
        scanned_bytes=scanned,
    )
    return Recovered(opened, report, ranges)


def _check_boundary(
    segment: Segment,
    next_base: int,
    config: LogConfig,
    skipped: list[Skipped],
    ranges: list[tuple[int, int]],
) -> None:
    """A closed segment must end exactly where the next one begins."""
    expected = next_base - segment.base
    if segment.size == expected:
        return
    if segment.size < expected:
        reason = (
            f"segment holds {segment.size} bytes but the next segment starts "
            f"{expected} bytes after its base: {expected - segment.size} bytes are missing"
        )
        if not config.skip_corrupt:
            raise CorruptLog(segment.path, segment.size, reason)
        skipped.append(Skipped(segment.path, segment.size, reason))
        ranges.append((segment.end, next_base))
        return
    reason = (
        f"segment holds {segment.size} bytes but the next segment starts "
        f"{expected} bytes after its base: the last {segment.size - expected} bytes overlap it"
    )
    if not config.skip_corrupt:
        raise CorruptLog(segment.path, expected, reason)
    # The overlap stays on disk, unread; positions there belong to the next segment.
    skipped.append(Skipped(segment.path, expected, reason))
    segment.clip(expected)
