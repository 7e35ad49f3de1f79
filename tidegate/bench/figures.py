"""What every workload shares: the figures dict, percentiles, RSS, bounded waits.

Figures are flat JSON-ready dicts: the keys CONTRACTS.md section 4 names plus
whatever else helps read them. Benchmarks measure and report; nothing here
judges a figure.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

from tidegate.errors import UsageError

__all__ = ["Deadline", "Figures", "latency_ms", "percentile", "rss_bytes"]

Figures = dict[str, Any]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    # Nearest rank: the smallest sample with at least q% of them at or below it.
    rank = math.ceil(q * len(ordered) / 100.0)
    return ordered[max(1, min(len(ordered), rank)) - 1]


def latency_ms(prefix: str, samples_s: Sequence[float]) -> Figures:
    """``{prefix}_p50_ms`` and ``{prefix}_p99_ms`` of samples given in seconds.

    Samples taken across two clocks of one machine (a server's publish
    timestamp, a client's receive time) can come out a few microseconds
    below zero; they are kept as measured, so a figure is never made up.
    """
    return {
        f"{prefix}_p50_ms": round(percentile(samples_s, 50) * 1e3, 3),
        f"{prefix}_p99_ms": round(percentile(samples_s, 99) * 1e3, 3),
    }


def rss_bytes(pid: int | None = None) -> int:
    """Resident memory of a process (this one by default), from /proc/PID/statm."""
    path = f"/proc/{'self' if pid is None else pid}/statm"
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError) as exc:
        who = "self" if pid is None else pid
        raise UsageError(f"cannot read the RSS of process {who} from {path}: {exc}") from None


class Deadline:
    """A time bound on one loop of a workload, so a stalled server cannot hang it."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return self._end - time.monotonic()

    def expired(self) -> bool:
        return self.left() <= 0

    def error(self) -> UsageError:
        return UsageError(f"{self.what} did not finish within {self.seconds:g} s")

    def check(self) -> None:
        if self.expired():
            raise self.error()
