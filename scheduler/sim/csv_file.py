"""Writing the simulator's CSV files (traces and events) one way.

Both contract files are written with the same dialect (``\\n`` line ends,
UTF-8, a header line first) to a path or an open handle, so they read back
the same whichever wrote them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["write_csv"]


def write_csv(
    target: Path | str | TextIO, header: Sequence[str], lines: Iterable[Sequence[object]]
) -> int:
    """Write ``header`` then each of ``lines``; return how many lines (header
    excluded). A path is created or truncated; a handle is left open."""
    if isinstance(target, Path | str):
        with Path(target).open("w", newline="", encoding="utf-8") as handle:
            return _write(handle, header, lines)
    return _write(target, header, lines)


def _write(handle: TextIO, header: Sequence[str], lines: Iterable[Sequence[object]]) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    count = 0
    for line in lines:
        writer.writerow(line)
        count += 1
    return count
