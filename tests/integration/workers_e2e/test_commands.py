"""The commands over real processes: tidegate loadgen writes the simulator's events file,
and tidegate demo runs headless and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.sim.events import EVENT_COLUMNS, read_events
from scheduler.sim.traces import read_trace
from tests.support.server import stop_process

from .conftest import KEYS, Server, env, worker_process

pytestmark = pytest.mark.integration

TRACE = """\
arrival_s,tenant,priority,input_tokens,output_tokens,session
0.000,acme,0,100,20,s-1
0.000,beta,0,100,20,
0.010,beta,0,100,20,
0.100,acme,2,300,30,
0.200,acme,0,100,20,s-1
0.300,acme,0,50,20,s-2
0.500,acme,1,80,25,
0.700,acme,0,100,25,s-2
"""


def test_loadgen_replays_a_trace_and_writes_the_events_file(server: Server, tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(TRACE)
    events = tmp_path / "events.csv"
    workers = worker_process(server, "lg", tmp_path / "workers.log")
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tidegate",
                "loadgen",
                "--server",
                server.address,
                "--trace",
                str(trace),
                "--events",
                str(events),
                "--speed",
                "2",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=90,
            env={
                **env(),
                "TIDEGATE_API_KEY_ACME": KEYS["acme"],
                "TIDEGATE_API_KEY_BETA": KEYS["beta"],
            },
            check=False,
        )
    finally:
        stop_process(workers)
    assert done.returncode == 0, done.stderr
    assert events.read_text().splitlines()[0] == ",".join(EVENT_COLUMNS)
    rows = read_events(events)
    source = read_trace(trace)
    assert [(r.tenant, r.arrival_s, r.priority) for r in rows] == [
        (t.tenant, t.arrival_s, t.priority) for t in source
    ]
    refused = [r for r in rows if not r.admitted]
    assert [(r.tenant, r.reject_reason) for r in refused] == [("beta", "rate_requests")]
    for row, wanted in zip(rows, source, strict=True):
        if not row.admitted:
            assert (row.dispatch_s, row.finish_s, row.worker) == (None, None, "")
            continue
        assert row.dispatch_s is not None
        assert row.first_token_s is not None
        assert row.finish_s is not None
        assert row.arrival_s <= row.dispatch_s <= row.first_token_s <= row.finish_s
        assert (row.input_tokens, row.output_tokens) == (wanted.input_tokens, wanted.output_tokens)
        # Status names the worker while it runs (each runs >= 0.2 s here).
        assert row.worker.startswith("lg-")
        assert (row.reject_reason, row.preemptions) == ("", 0)
    assert '"completed": 7' in done.stdout


@pytest.mark.slow
def test_the_demo_runs_headless_in_a_short_mode_and_exits_0(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tidegate", "demo", "--seconds", "8", "--headless", "--no-ray"],
        capture_output=True,
        text=True,
        timeout=100,
        env={k: v for k, v in os.environ.items() if not k.startswith("DEMO_")},
        cwd=Path(__file__).resolve().parents[3],
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "workers: 4 ready (in-process)" in out
    for tenant in ("gold", "silver", "bronze"):
        assert tenant in out
    assert "Summary" in out
    assert "Fairness over the run" in out
