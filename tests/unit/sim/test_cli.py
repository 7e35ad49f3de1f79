"""``tidegate simulate`` and ``tidegate trace``, through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.sim.events import EVENT_COLUMNS, read_events
from scheduler.sim.traces import read_trace
from tidegate.cli import main

CONFIG = """
tenants:
  a: {weight: 1}
  b: {weight: 3}
fleet:
  workers: 2
  model:
    prefill_tokens_per_s: 4000
    decode_step_s: 0.02
    decode_step_per_seq_s: 0.001
    max_batch: 8
    kv_capacity_tokens: 50000
workload:
  duration_s: 5
  streams:
    - {tenant: a, rate_per_s: 20, input_tokens: 100, output_tokens: {median: 20, p99: 80}}
    - {tenant: b, rate_per_s: 20, input_tokens: 100, output_tokens: 20, priority: 0}
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    return {"config": config, "trace": tmp_path / "t.csv", "events": tmp_path / "e.csv"}


def generate(files: dict[str, Path], seed: int = 1) -> None:
    argv = ["trace", "generate", "--config", str(files["config"]), "--out", str(files["trace"])]
    assert main([*argv, "--seed", str(seed)]) == 0


def simulate_argv(files: dict[str, Path], *extra: str) -> list[str]:
    return [
        "simulate",
        "--config",
        str(files["config"]),
        "--trace",
        str(files["trace"]),
        "--events",
        str(files["events"]),
        *extra,
    ]


def test_generate_then_simulate_json(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    generate(files)
    rows = read_trace(files["trace"])
    assert 150 < len(rows) < 250
    capsys.readouterr()
    assert main(simulate_argv(files, "--json", "--policy", "fifo", "--seed", "4")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["policy"] == "fifo"
    assert summary["seed"] == 4
    assert summary["requests"] == len(rows)
    assert set(summary["tenants"]) == {"a", "b"}
    for key in ("served_tokens", "wait_p50_s", "wait_p99_s", "ttft_p50_s", "ttft_p99_s"):
        assert key in summary["tenants"]["a"]
    for key in ("jain_index", "max_service_gap", "busy_fraction_backlogged"):
        assert key in summary
    assert files["events"].read_text().splitlines()[0] == ",".join(EVENT_COLUMNS)
    assert len(read_events(files["events"])) == len(rows)


def test_simulate_prints_a_table_without_json(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    generate(files)
    assert main(simulate_argv(files)) == 0
    out = capsys.readouterr().out
    assert out.startswith("policy tidegate (seed 0)")


def test_malformed_trace_is_one_line_and_exit_2(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    files["trace"].write_text(
        "arrival_s,tenant,priority,input_tokens,output_tokens,session\n0,a,0,1,1,\n1,a,0,x,1,\n"
    )
    assert main(simulate_argv(files)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{files['trace']}:3: column input_tokens: must be an integer (got 'x')" in err
    assert "Traceback" not in err


def test_config_error_names_the_key(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    generate(files)
    files["config"].write_text(CONFIG.replace("a: {weight: 1}", "a: {weight: -1}"))
    assert main(simulate_argv(files)) == 2
    assert "tenants.a.weight: must be > 0 (got -1)" in capsys.readouterr().err


def test_config_without_fleet(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    generate(files)
    files["config"].write_text("tenants: {a: {}}\n")
    assert main(simulate_argv(files)) == 2
    assert "fleet: missing" in capsys.readouterr().err


def test_unknown_policy_is_a_usage_error(files: dict[str, Path]) -> None:
    with pytest.raises(SystemExit) as info:
        main(simulate_argv(files, "--policy", "lottery"))
    assert info.value.code == 2


def test_convert_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    azure = tmp_path / "azure.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:17:04.0319600,3180,8\n"
    )
    out = tmp_path / "trace.csv"
    argv = ["trace", "convert", "--input", str(azure), "--out", str(out), "--tenants", "x,y"]
    assert main([*argv, "--assign", "slice", "--priority", "x=1"]) == 0
    rows = read_trace(out)
    assert [(r.tenant, r.priority, r.input_tokens) for r in rows] == [
        ("x", 1, 4808),
        ("x", 1, 3180),
    ]
    capsys.readouterr()
    assert main(["trace", "validate", str(out)]) == 0
    assert "2 rows" in capsys.readouterr().out
    assert main([*argv, "--priority", "x=high"]) == 2
    assert main([*argv, "--assign", "file"]) == 2  # one file, two tenants
    assert "one tenant per input file" in capsys.readouterr().err
