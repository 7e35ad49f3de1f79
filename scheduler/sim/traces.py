"""Request traces: the contract's CSV (CONTRACTS.md section 3) and converters to it.

    arrival_s,tenant,priority,input_tokens,output_tokens,session
    0.000,acme,0,1469,13,s-1

A malformed row stops the reader with a :class:`TraceError` naming the file,
the line and the column. The Azure LLM inference traces (2023) carry no
tenant, so :func:`convert_azure` assigns one by a seeded hash of the row, by
time slice, or one tenant per input file (mixing the code and conversation
traces is the last).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal, TextIO

from scheduler.sim.csv_file import write_csv
from scheduler.sim.errors import TraceError

__all__ = [
    "AZURE_COLUMNS",
    "TRACE_COLUMNS",
    "AzureRow",
    "TraceRow",
    "convert_azure",
    "read_azure",
    "read_trace",
    "validate_rows",
    "write_trace",
]

TRACE_COLUMNS = ("arrival_s", "tenant", "priority", "input_tokens", "output_tokens", "session")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MAX_SESSION = 256
_EPOCH_DAY = date(2000, 1, 1).toordinal()

Assign = Literal["hash", "slice", "file"]


@dataclass(frozen=True, slots=True)
class TraceRow:
    arrival_s: float
    tenant: str
    priority: int
    input_tokens: int
    output_tokens: int
    session: str = ""


# ------------------------------------------------------------------ contract CSV


def read_trace(path: Path | str) -> list[TraceRow]:
    """Read and validate a whole trace file."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(_parse(handle, path))
    except OSError as exc:
        raise TraceError(path, 0, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise TraceError(path, 0, None, f"not UTF-8 text: {exc.reason}") from None


def _parse(handle: TextIO, path: Path) -> Iterator[TraceRow]:
    reader = csv.reader(handle)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise TraceError(path, 1, None, f"bad CSV: {exc}") from None
    if header is None:
        raise TraceError(path, 1, None, "empty file: the header line is required")
    if tuple(h.strip() for h in header) != TRACE_COLUMNS:
        raise TraceError(
            path, 1, None, f"header must be {','.join(TRACE_COLUMNS)} (got {','.join(header)})"
        )
    previous = 0.0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise TraceError(path, reader.line_num, None, f"bad CSV: {exc}") from None
        line = reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        row = _row(fields, path, line)
        if row.arrival_s < previous:
            raise TraceError(
                path,
                line,
                "arrival_s",
                f"{row.arrival_s} is before the previous row's {previous}: "
                "rows must be sorted by arrival",
            )
        previous = row.arrival_s
        yield row


def _row(fields: Sequence[str], path: Path, line: int) -> TraceRow:
    if len(fields) != len(TRACE_COLUMNS):
        raise TraceError(
            path, line, None, f"expected {len(TRACE_COLUMNS)} fields, got {len(fields)}"
        )
    raw = dict(zip(TRACE_COLUMNS, (f.strip() for f in fields), strict=True))
    arrival_text = raw["arrival_s"]
    try:
        arrival = float(arrival_text)
    except ValueError:
        arrival = math.nan
    if not (math.isfinite(arrival) and arrival >= 0):
        raise TraceError(
            path, line, "arrival_s", f"must be a finite number >= 0 (got {arrival_text!r})"
        )
    tenant = raw["tenant"]
    if not _TENANT.fullmatch(tenant):
        raise TraceError(
            path, line, "tenant", f"must match [a-z0-9][a-z0-9_-]{{0,62}} (got {tenant!r})"
        )
    priority = _int(raw, "priority", path, line, minimum=None)
    input_tokens = _int(raw, "input_tokens", path, line, minimum=0)
    output_tokens = _int(raw, "output_tokens", path, line, minimum=0)
    session = raw["session"]
    if len(session) > _MAX_SESSION:
        raise TraceError(
            path, line, "session", f"at most {_MAX_SESSION} characters (got {len(session)})"
        )
    return TraceRow(arrival, tenant, priority, input_tokens, output_tokens, session)


def _int(raw: Mapping[str, str], column: str, path: Path, line: int, minimum: int | None) -> int:
    text = raw[column]
    try:
        value = int(text)
    except ValueError:
        raise TraceError(path, line, column, f"must be an integer (got {text!r})") from None
    if minimum is not None and value < minimum:
        raise TraceError(path, line, column, f"must be >= {minimum} (got {value})")
    return value


def validate_rows(rows: Sequence[TraceRow], source: str = "<rows>") -> None:
    """The reader's rules for rows built in code (generator, converter, tests)."""
    previous = 0.0
    for index, row in enumerate(rows):
        line = index + 2  # as if written: line 1 is the header
        fields = (
            repr(row.arrival_s),
            row.tenant,
            str(row.priority),
            str(row.input_tokens),
            str(row.output_tokens),
            row.session,
        )
        checked = _row(fields, Path(source), line)
        if checked.arrival_s < previous:
            raise TraceError(source, line, "arrival_s", "rows must be sorted by arrival")
        previous = checked.arrival_s


def write_trace(target: Path | str | TextIO, rows: Iterable[TraceRow]) -> int:
    """Write rows as the contract CSV; return how many were written."""
    lines = (
        (
            f"{row.arrival_s:.6f}",
            row.tenant,
            row.priority,
            row.input_tokens,
            row.output_tokens,
            row.session,
        )
        for row in rows
    )
    return write_csv(target, TRACE_COLUMNS, lines)


# ------------------------------------------------------------------ Azure 2023 traces


@dataclass(frozen=True, slots=True)
class AzureRow:
    at_s: float  # seconds since 2000-01-01 (a near epoch keeps sub-microsecond precision)
    context_tokens: int
    generated_tokens: int


def read_azure(path: Path | str) -> list[AzureRow]:
    """Read ``TIMESTAMP,ContextTokens,GeneratedTokens`` (Azure LLM inference trace 2023)."""
    path = Path(path)
    rows: list[AzureRow] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != AZURE_COLUMNS:
                raise TraceError(
                    path, 1, None, f"header must be {','.join(AZURE_COLUMNS)} (got {header})"
                )
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue
                if len(fields) != 3:
                    raise TraceError(path, line, None, f"expected 3 fields, got {len(fields)}")
                day, seconds = _timestamp(fields[0].strip(), path, line)
                context = _azure_int(fields[1], "ContextTokens", path, line)
                generated = _azure_int(fields[2], "GeneratedTokens", path, line)
                rows.append(AzureRow((day - _EPOCH_DAY) * 86400.0 + seconds, context, generated))
    except OSError as exc:
        raise TraceError(path, 0, None, f"cannot read: {exc.strerror or exc}") from None
    rows.sort(key=lambda r: r.at_s)  # stable: equal timestamps keep file order
    return rows


def _timestamp(text: str, path: Path, line: int) -> tuple[int, float]:
    """``2023-11-16 18:17:03.9799600`` -> (day ordinal, seconds of the day).

    Parsed by hand: the fraction has 7 digits, more than ``datetime`` takes.
    """
    try:
        day_text, time_text = text.split(" ", 1) if " " in text else text.split("T", 1)
        day = date.fromisoformat(day_text).toordinal()
        hours, minutes, seconds = time_text.split(":")
        value = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        raise TraceError(
            path, line, "TIMESTAMP", f"must look like 2023-11-16 18:17:03.9799600 (got {text!r})"
        ) from None
    return day, value


def _azure_int(text: str, column: str, path: Path, line: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise TraceError(path, line, column, f"must be an integer (got {text!r})") from None
    if value < 0:
        raise TraceError(path, line, column, f"must be >= 0 (got {value})")
    return value


def _hash_pick(seed: int, key: str, count: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def convert_azure(
    sources: Sequence[tuple[str, Sequence[AzureRow]]],
    tenants: Sequence[str],
    *,
    assign: Assign = "hash",
    seed: int = 0,
    slice_s: float = 60.0,
    start_s: float = 0.0,
    duration_s: float | None = None,
    speed: float = 1.0,
    priorities: Mapping[str, int] | None = None,
) -> list[TraceRow]:
    """Turn Azure rows into contract rows with tenants assigned.

    ``sources`` are (name, rows) per input file; all files share one time
    origin, the earliest row of any of them, so mixed files keep their real
    overlap. ``assign``: ``hash`` picks a tenant by a seeded hash of the
    file name and row number (stable whatever the window); ``slice`` gives
    consecutive ``slice_s`` windows of the original time to the tenants in
    turn; ``file`` gives every row of the i-th source to the i-th tenant.
    Rows between ``start_s`` and ``start_s + duration_s`` (original seconds
    from the origin) are kept, shifted to start at 0 and divided by ``speed``.
    """
    if not tenants:
        raise ValueError("tenants: give at least one tenant name")
    for name in tenants:
        if not _TENANT.fullmatch(name):
            raise ValueError(f"tenant {name!r}: must match [a-z0-9][a-z0-9_-]{{0,62}}")
    if assign == "file" and len(tenants) != len(sources):
        raise ValueError(
            f"assign=file needs one tenant per input file ({len(sources)} files, "
            f"{len(tenants)} tenants)"
        )
    if not speed > 0:
        raise ValueError(f"speed: must be > 0 (got {speed})")
    if not slice_s > 0:
        raise ValueError(f"slice_s: must be > 0 (got {slice_s})")
    prio = dict(priorities or {})
    unknown = set(prio) - set(tenants)
    if unknown:
        raise ValueError(f"priorities name tenants not in the list: {sorted(unknown)}")
    nonempty = [rows for _, rows in sources if rows]
    if not nonempty:
        return []
    origin = min(rows[0].at_s for rows in nonempty)
    end = math.inf if duration_s is None else start_s + duration_s
    merged: list[tuple[float, int, int, str]] = []
    for file_index, (name, rows) in enumerate(sources):
        for index, row in enumerate(rows):
            t = row.at_s - origin
            if not start_s <= t < end:
                continue
            if assign == "file":
                tenant = tenants[file_index]
            elif assign == "slice":
                tenant = tenants[int(t // slice_s) % len(tenants)]
            else:
                tenant = tenants[_hash_pick(seed, f"{name}:{index}", len(tenants))]
            merged.append((t, file_index, index, tenant))
    merged.sort()
    by_file = [rows for _, rows in sources]
    return [
        TraceRow(
            arrival_s=round((t - start_s) / speed, 6),
            tenant=tenant,
            priority=prio.get(tenant, 0),
            input_tokens=by_file[f][i].context_tokens,
            output_tokens=by_file[f][i].generated_tokens,
        )
        for t, f, i, tenant in merged
    ]
