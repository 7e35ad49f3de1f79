"""The schedule benchmark runs and reports its figures (timings are not asserted)."""

from __future__ import annotations

import pytest

from scheduler.bench import run_schedule_bench


def test_schedule_bench_reports_its_figures() -> None:
    figures = run_schedule_bench(queued=500, tenants=20, seed=1, decisions=200)
    assert figures["queued"] == 500
    assert figures["tenants"] == 20
    for key in ("dispatch_us_p50", "dispatch_us_p99", "dispatch_fill_us_p99"):
        assert figures[key] > 0
    assert figures["dispatch_us_p50"] <= figures["dispatch_us_p99"] <= figures["dispatch_us_max"]


def test_schedule_bench_rejects_empty_runs() -> None:
    with pytest.raises(ValueError, match="tenants 0"):
        run_schedule_bench(queued=10, tenants=0, seed=1)
