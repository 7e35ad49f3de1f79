"""The events file: one row per request (CONTRACTS.md section 3).

    request_id,tenant,priority,arrival_s,admitted,reject_reason,dispatch_s,first_token_s,finish_s,input_tokens,output_tokens,worker,preemptions

``tidegate simulate`` writes it from the virtual clock and ``tidegate
loadgen`` from the wall clock, through the same :func:`write_events`, so
the two can be compared column for column. Times are seconds from the
trace's start, empty where they do not apply; ``dispatch_s`` is the first
dispatch and ``first_token_s`` the first token ever streamed.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

from scheduler.sim.csv_file import write_csv
from scheduler.sim.errors import TraceError

__all__ = ["EVENT_COLUMNS", "EventRow", "read_events", "write_events"]

T = TypeVar("T")

EVENT_COLUMNS = (
    "request_id",
    "tenant",
    "priority",
    "arrival_s",
    "admitted",
    "reject_reason",
    "dispatch_s",
    "first_token_s",
    "finish_s",
    "input_tokens",
    "output_tokens",
    "worker",
    "preemptions",
)


@dataclass(frozen=True, slots=True)
class EventRow:
    request_id: str
    tenant: str
    priority: int
    arrival_s: float
    admitted: bool
    reject_reason: str  # a RefusalReason value; "" when admitted and not dropped
    dispatch_s: float | None
    first_token_s: float | None
    finish_s: float | None
    input_tokens: int
    output_tokens: int
    worker: str  # the worker that last ran it; "" if it never ran
    preemptions: int

    @property
    def wait_s(self) -> float | None:
        """Time from arrival to the first dispatch."""
        return None if self.dispatch_s is None else self.dispatch_s - self.arrival_s

    @property
    def ttft_s(self) -> float | None:
        """Time from arrival to the first token."""
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s


def _time(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def write_events(target: Path | str | TextIO, rows: Iterable[EventRow]) -> int:
    """Write the header and one line per row; return the row count."""
    return write_csv(target, EVENT_COLUMNS, (_line(row) for row in rows))


def _line(row: EventRow) -> tuple[object, ...]:
    return (
        row.request_id,
        row.tenant,
        row.priority,
        _time(row.arrival_s),
        1 if row.admitted else 0,
        row.reject_reason,
        _time(row.dispatch_s),
        _time(row.first_token_s),
        _time(row.finish_s),
        row.input_tokens,
        row.output_tokens,
        row.worker,
        row.preemptions,
    )


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


def _opt_time(text: str) -> float | None:
    return float(text) if text else None


def _field(
    raw: dict[str, str], column: str, convert: Callable[[str], T], *, path: Path, line: int
) -> T:
    text = raw.get(column) or ""
    try:
        return convert(text)
    except ValueError:
        raise TraceError(path, line, column, f"bad value {text!r}") from None


def read_events(path: Path | str) -> list[EventRow]:
    """Read an events file back (for comparisons and tests)."""
    path = Path(path)
    rows: list[EventRow] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != EVENT_COLUMNS:
            raise TraceError(path, 1, None, f"header must be {','.join(EVENT_COLUMNS)}")
        for raw in reader:
            line = reader.line_num
            field = functools.partial(_field, raw, path=path, line=line)
            rows.append(
                EventRow(
                    request_id=raw["request_id"],
                    tenant=raw["tenant"],
                    priority=field("priority", int),
                    arrival_s=field("arrival_s", float),
                    admitted=field("admitted", _flag),
                    reject_reason=raw["reject_reason"],
                    dispatch_s=field("dispatch_s", _opt_time),
                    first_token_s=field("first_token_s", _opt_time),
                    finish_s=field("finish_s", _opt_time),
                    input_tokens=field("input_tokens", int),
                    output_tokens=field("output_tokens", int),
                    worker=raw["worker"],
                    preemptions=field("preemptions", int),
                )
            )
    return rows
