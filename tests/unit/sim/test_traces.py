"""Trace CSV reading, writing and validation; the Azure converter."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from scheduler.sim.errors import TraceError
from scheduler.sim.traces import (
    TRACE_COLUMNS,
    AzureRow,
    TraceRow,
    convert_azure,
    read_azure,
    read_trace,
    validate_rows,
    write_trace,
)

HEADER = ",".join(TRACE_COLUMNS)


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip(tmp_path: Path) -> None:
    rows = [
        TraceRow(0.0, "acme", 0, 1469, 13, "s-1"),
        TraceRow(0.5, "free-tier", -1, 10, 0, ""),
        TraceRow(0.5, "acme", 2, 1, 1, "x"),
    ]
    path = tmp_path / "t.csv"
    assert write_trace(path, rows) == 3
    assert path.read_text().splitlines()[0] == HEADER
    assert read_trace(path) == rows


def test_contract_example_reads(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n0.000,acme,0,1469,13,s-1\n\n1.5,acme,0,1,2,\n")
    assert read_trace(path) == [
        TraceRow(0.0, "acme", 0, 1469, 13, "s-1"),
        TraceRow(1.5, "acme", 0, 1, 2, ""),
    ]


@pytest.mark.parametrize(
    ("line", "column", "problem"),
    [
        ("x,acme,0,1,1,", "arrival_s", "finite number >= 0"),
        ("-1,acme,0,1,1,", "arrival_s", "finite number >= 0"),
        ("nan,acme,0,1,1,", "arrival_s", "finite number >= 0"),
        ("1,Acme,0,1,1,", "tenant", "must match"),
        ("1,,0,1,1,", "tenant", "must match"),
        ("1,acme,high,1,1,", "priority", "must be an integer (got 'high')"),
        ("1,acme,0,1.5,1,", "input_tokens", "must be an integer"),
        ("1,acme,0,1,-3,", "output_tokens", "must be >= 0 (got -3)"),
    ],
)
def test_malformed_row_names_file_line_and_column(
    tmp_path: Path, line: str, column: str, problem: str
) -> None:
    path = write(tmp_path, f"{HEADER}\n0,acme,0,1,1,\n{line}\n")
    with pytest.raises(TraceError) as info:
        read_trace(path)
    err = info.value
    assert (err.path, err.line, err.column) == (str(path), 3, column)
    assert problem in str(err)
    assert str(err).startswith(f"{path}:3: column {column}: ")


def test_wrong_field_count(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n0,acme,0,1,1\n")
    with pytest.raises(TraceError, match=r":2: expected 6 fields, got 5"):
        read_trace(path)


def test_unsorted_rows(tmp_path: Path) -> None:
    path = write(tmp_path, f"{HEADER}\n2,acme,0,1,1,\n1,acme,0,1,1,\n")
    with pytest.raises(TraceError, match=r":3: column arrival_s: .*sorted by arrival"):
        read_trace(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r":1: empty file"),
        ("arrival,tenant\n", r":1: header must be arrival_s,tenant,priority"),
    ],
)
def test_bad_header(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(TraceError, match=match):
        read_trace(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as info:
        read_trace(tmp_path / "nope.csv")
    assert str(info.value) == f"{tmp_path / 'nope.csv'}: cannot read: No such file or directory"


def test_validate_rows_applies_the_same_rules() -> None:
    validate_rows([TraceRow(0.0, "a", 0, 1, 1)])
    with pytest.raises(TraceError, match="column tenant"):
        validate_rows([TraceRow(0.0, "A", 0, 1, 1)])
    with pytest.raises(TraceError, match="sorted"):
        validate_rows([TraceRow(1.0, "a", 0, 1, 1), TraceRow(0.0, "a", 0, 1, 1)])


def test_write_to_a_stream() -> None:
    buffer = io.StringIO()
    write_trace(buffer, [TraceRow(1.25, "a", 0, 2, 3, "s")])
    assert buffer.getvalue() == f"{HEADER}\n1.250000,a,0,2,3,s\n"


# ------------------------------------------------------------------ Azure

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:05.5000000,100,1
"""


def test_read_azure_parses_seven_digit_fractions(tmp_path: Path) -> None:
    rows = read_azure(write(tmp_path, AZURE))
    assert [r.context_tokens for r in rows] == [4808, 3180, 100]
    assert rows[1].at_s - rows[0].at_s == pytest.approx(0.052, abs=1e-6)
    assert rows[2].at_s - rows[0].at_s == pytest.approx(1.52004, abs=1e-6)


def test_read_azure_errors_name_the_column(tmp_path: Path) -> None:
    bad = AZURE + "2023-11-16 18:17:06,abc,1\n"
    with pytest.raises(TraceError, match=r":5: column ContextTokens: must be an integer"):
        read_azure(write(tmp_path, bad))
    bad = AZURE + "yesterday,1,1\n"
    with pytest.raises(TraceError, match=r":5: column TIMESTAMP"):
        read_azure(write(tmp_path, bad))


def rows_at(*times: float) -> list[AzureRow]:
    return [AzureRow(t, 100 + i, 10 + i) for i, t in enumerate(times)]


def test_convert_hash_is_seeded_and_stable() -> None:
    source = [("code", rows_at(*[float(i) for i in range(200)]))]
    one = convert_azure(source, ["a", "b", "c"], assign="hash", seed=1)
    again = convert_azure(source, ["a", "b", "c"], assign="hash", seed=1)
    other = convert_azure(source, ["a", "b", "c"], assign="hash", seed=2)
    assert one == again
    assert [r.tenant for r in one] != [r.tenant for r in other]
    counts = {t: sum(1 for r in one if r.tenant == t) for t in "abc"}
    assert all(40 < n < 95 for n in counts.values())
    # A window keeps each row's tenant: the hash is per row, not per position.
    window = convert_azure(source, ["a", "b", "c"], assign="hash", seed=1, start_s=50.0)
    assert [r.tenant for r in window] == [r.tenant for r in one[50:]]
    assert window[0].arrival_s == 0.0


def test_convert_slice_takes_turns() -> None:
    source = [("code", rows_at(0.0, 5.0, 10.0, 15.0, 20.0, 25.0))]
    rows = convert_azure(source, ["a", "b"], assign="slice", slice_s=10.0)
    assert [r.tenant for r in rows] == ["a", "a", "b", "b", "a", "a"]


def test_convert_file_mixes_two_traces_on_one_clock() -> None:
    code = rows_at(100.0, 102.0)
    conv = rows_at(101.0, 103.0)
    rows = convert_azure(
        [("code", code), ("conv", conv)],
        ["coder", "chat"],
        assign="file",
        priorities={"chat": 1},
        speed=2.0,
    )
    assert [(r.arrival_s, r.tenant, r.priority) for r in rows] == [
        (0.0, "coder", 0),
        (0.5, "chat", 1),
        (1.0, "coder", 0),
        (1.5, "chat", 1),
    ]
    assert rows[0].input_tokens == 100
    assert rows[0].output_tokens == 10


def test_convert_duration_window() -> None:
    source = [("x", rows_at(0.0, 1.0, 2.0, 3.0))]
    rows = convert_azure(source, ["a"], start_s=1.0, duration_s=2.0)
    assert [r.arrival_s for r in rows] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tenants": []}, "at least one tenant"),
        ({"tenants": ["Bad"]}, "must match"),
        ({"tenants": ["a", "b"], "assign": "file"}, "one tenant per input file"),
        ({"tenants": ["a"], "speed": 0.0}, "speed"),
        ({"tenants": ["a"], "priorities": {"z": 1}}, "not in the list"),
    ],
)
def test_convert_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        convert_azure([("x", rows_at(0.0))], **kwargs)  # type: ignore[arg-type]


def test_the_shared_azure_traces_convert() -> None:
    shared = Path(__file__).resolve().parents[4] / "shared" / "traces"
    code = shared / "azure2023_AzureLLMInferenceTrace_code.csv"
    if not code.exists():
        pytest.skip("the shared Azure traces are not on this machine")
    rows = convert_azure([("code", read_azure(code))], ["a", "b"], duration_s=60.0)
    validate_rows(rows)
    assert 50 < len(rows) < 2000
