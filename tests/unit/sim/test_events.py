"""The events CSV of CONTRACTS.md section 3."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from scheduler.sim.errors import TraceError
from scheduler.sim.events import EVENT_COLUMNS, EventRow, read_events, write_events

CONTRACT_HEADER = (
    "request_id,tenant,priority,arrival_s,admitted,reject_reason,dispatch_s,first_token_s,"
    "finish_s,input_tokens,output_tokens,worker,preemptions"
)

DONE = EventRow("r1", "acme", 2, 0.5, True, "", 0.75, 1.0, 2.5, 100, 20, "w3", 1)
REFUSED = EventRow("r2", "free", 0, 0.6, False, "rate_requests", None, None, None, 5, 6, "", 0)


def test_header_is_the_contract() -> None:
    assert ",".join(EVENT_COLUMNS) == CONTRACT_HEADER


def test_rows_are_written_with_empty_cells_where_nothing_applies() -> None:
    buffer = io.StringIO()
    assert write_events(buffer, [DONE, REFUSED]) == 2
    lines = buffer.getvalue().splitlines()
    assert lines[0] == CONTRACT_HEADER
    assert lines[1] == "r1,acme,2,0.500000,1,,0.750000,1.000000,2.500000,100,20,w3,1"
    assert lines[2] == "r2,free,0,0.600000,0,rate_requests,,,,5,6,,0"


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    write_events(path, [DONE, REFUSED])
    assert read_events(path) == [DONE, REFUSED]


def test_wait_and_ttft() -> None:
    assert DONE.wait_s == pytest.approx(0.25)
    assert DONE.ttft_s == pytest.approx(0.5)
    assert REFUSED.wait_s is None
    assert REFUSED.ttft_s is None


def test_bad_value_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(CONTRACT_HEADER + "\nr1,a,0,0.1,yes,,,,,1,1,,0\n")
    with pytest.raises(TraceError, match=r":2: column admitted: bad value 'yes'"):
        read_events(path)
