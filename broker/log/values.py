"""Value types of the commit log: its settings and what it reports.

They live apart from :mod:`broker.log.commitlog` so settings code and tests
can build them without pulling in the file machinery; ``commitlog`` and the
``broker.log`` package re-export every name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple

from broker.errors import InvalidArgument
from broker.log.record import HEADER_SIZE, MAX_PAYLOAD_BYTES

__all__ = [
    "FsyncPolicy",
    "LogConfig",
    "LogLocation",
    "LogStats",
    "RecoveryReport",
    "SegmentInfo",
    "Skipped",
]


class FsyncPolicy(StrEnum):
    """When an append counts as durable.

    ``always``: an append returns only after the data is fsynced (concurrent
    appenders share one fsync). ``interval``: an append returns after write();
    a background thread fsyncs at least every ``fsync_interval_s`` while
    there is unsynced data, so a machine crash (not a process crash: the page
    cache survives that) loses at most about that much.
    """

    ALWAYS = "always"
    INTERVAL = "interval"


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Settings of one commit log; validated on construction."""

    segment_bytes: int = 128 * 1024 * 1024
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_s: float = 0.1  # the bounded loss window under INTERVAL
    retention_bytes: int | None = None  # total bytes of closed segments to keep
    retention_s: float | None = None  # age of a closed segment (by its last write)
    skip_corrupt: bool = False  # open anyway, skipping (and reporting) corrupt records
    max_record_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        # Settings arrive as plain strings from YAML; accept "always"/"interval".
        try:
            policy = FsyncPolicy(self.fsync)
        except ValueError:
            choices = ", ".join(p.value for p in FsyncPolicy)
            raise InvalidArgument(f"fsync is {self.fsync!r}; it must be one of {choices}") from None
        object.__setattr__(self, "fsync", policy)
        if self.segment_bytes < 4096:
            raise InvalidArgument(f"segment_bytes is {self.segment_bytes}; it must be >= 4096")
        if not (math.isfinite(self.fsync_interval_s) and self.fsync_interval_s > 0):
            raise InvalidArgument(
                f"fsync_interval_s is {self.fsync_interval_s}; it must be a finite number > 0"
            )
        if self.retention_bytes is not None and self.retention_bytes < 0:
            raise InvalidArgument(
                f"retention_bytes is {self.retention_bytes}; it must be >= 0 or unset"
            )
        if self.retention_s is not None and not self.retention_s >= 0:
            raise InvalidArgument(f"retention_s is {self.retention_s}; it must be >= 0 or unset")
        if not 0 < self.max_record_bytes <= MAX_PAYLOAD_BYTES - HEADER_SIZE:
            raise InvalidArgument(
                f"max_record_bytes is {self.max_record_bytes}; it must be in "
                f"(0, {MAX_PAYLOAD_BYTES - HEADER_SIZE}]"
            )


# The two report entries are NamedTuples, not dataclasses, on purpose: callers
# were promised plain tuples ``(path, offset)`` and ``(path, offset, reason)``
# and may unpack them; the names are a bonus.
class LogLocation(NamedTuple):
    """A byte offset inside one segment file."""

    path: Path
    offset: int


class Skipped(NamedTuple):
    """A corrupt stretch skipped on open; it starts at ``offset`` in ``path``."""

    path: Path
    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening the log found and did. Nothing is dropped without a line here."""

    truncated_bytes: int = 0
    torn_tail_at: LogLocation | None = None
    skipped: tuple[Skipped, ...] = ()
    segments: int = 0
    records: int = 0
    scanned_bytes: int = 0

    @property
    def clean(self) -> bool:
        """True when open found nothing to cut or skip."""
        return self.torn_tail_at is None and not self.skipped and self.truncated_bytes == 0


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment as seen by retention and by the index's reclaim logic."""

    base: int
    end: int
    path: Path
    last_write_wall_s: float
    closed: bool

    @property
    def size(self) -> int:
        return self.end - self.base


@dataclass(frozen=True, slots=True)
class LogStats:
    """A snapshot for metrics; counters count since open."""

    start_position: int
    end_position: int
    synced_position: int
    segments: int
    records_appended: int
    batches_appended: int
    bytes_appended: int
    fsyncs: int
