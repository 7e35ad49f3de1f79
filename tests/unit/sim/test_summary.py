"""The summary's figures, on hand-made runs whose answers are known."""

from __future__ import annotations

import pytest

from scheduler.sim.events import EventRow
from scheduler.sim.summary import Recorder, format_summary, jain, percentile, summarize


def row(rid: str, tenant: str, arrival: float, dispatch: float | None, finish: float | None,
        *, admitted: bool = True, reason: str = "", tokens: tuple[int, int] = (10, 5)
        ) -> EventRow:  # fmt: skip
    first = None if dispatch is None else dispatch + 0.1
    return EventRow(
        rid, tenant, 0, arrival, admitted, reason, dispatch, first, finish, *tokens, "w0", 0
    )


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(map(float, range(101))), 99) == pytest.approx(99.0)


def test_jain_index() -> None:
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0]) == pytest.approx(0.5)
    assert jain([0.0, 0.0]) is None
    # FIFO's equal service to weights 1:2:4, normalised: 1, 1/2, 1/4.
    assert jain([1.0, 0.5, 0.25]) == pytest.approx(0.7778, abs=1e-4)


def test_recorder_tracks_backlog_intervals() -> None:
    rec = Recorder(1.0, 2.0)
    rec.queued("a", +1, 1.0)
    rec.queued("a", +1, 1.5)
    rec.queued("a", -1, 2.0)
    rec.queued("a", -1, 3.0)
    rec.queued("a", +1, 4.0)
    rec.close(6.0)
    assert rec.backlog["a"] == [(1.0, 3.0), (4.0, 6.0)]
    with pytest.raises(AssertionError):
        rec.queued("b", -1, 0.0)


def weighted_run(share_a: float, share_b: float) -> dict[str, object]:
    """Two tenants backlogged over [0, 10]; each second one dispatch each, a then b."""
    rec = Recorder(1.0, 1.0)
    rates = {"a": share_a, "b": share_b}
    for tenant in rates:
        rec.queued(tenant, +1, 0.0)
    for t in range(10):
        for tenant, rate in rates.items():
            rec.charge(tenant, rate, float(t))
    for tenant, rate in rates.items():
        rec.service(tenant, 0.0, 10.0, int(rate * 10), 0)
        rec.queued(tenant, -1, 10.0)
    rec.busy("w0", 0.0, 10.0)
    rows = [row("r1", "a", 0.0, 0.0, 10.0), row("r2", "b", 0.0, 0.0, 10.0)]
    return summarize(rows, rec, {"a": 1.0, "b": 2.0}, workers=2, policy="p", seed=0)


def test_weighted_fair_service_scores_one() -> None:
    summary = weighted_run(100.0, 200.0)  # exactly 1:2
    assert summary["jain_index"] == pytest.approx(1.0)
    assert summary["jain_index_dispatched"] == pytest.approx(1.0)
    # Normalised, each dispatch is worth 100: the gap swings by one dispatch.
    assert summary["max_service_gap"] == pytest.approx(100.0)
    assert summary["busy_fraction_backlogged"] == pytest.approx(0.5)  # one of two workers


def test_unweighted_service_to_weighted_tenants_scores_lower() -> None:
    summary = weighted_run(100.0, 100.0)  # 1:1 where 1:2 is due
    assert summary["jain_index"] == pytest.approx(jain([1000.0, 500.0]))
    # a gains 100 and b 50 (normalised) per round: 100 + 50 x 9 at the top.
    assert summary["max_service_gap"] == pytest.approx(550.0)


def test_dispatches_after_a_queue_empties_at_the_same_instant_do_not_count() -> None:
    rec = Recorder(1.0, 1.0)
    rec.queued("a", +1, 1.0)
    rec.queued("b", +1, 1.0)
    rec.charge("a", 10.0, 2.0)
    rec.queued("a", -1, 2.0)  # a's queue empties...
    rec.charge("b", 10.0, 2.0)  # ...then, at the same instant, b gets three dispatches
    rec.charge("b", 10.0, 2.0)
    rec.charge("b", 10.0, 2.0)
    rec.queued("b", -1, 3.0)
    rows = [row("r1", "a", 1.0, 2.0, 3.0), row("r2", "b", 1.0, 2.0, 3.0)]
    summary = summarize(rows, rec, {"a": 1.0, "b": 1.0}, workers=1, policy="p", seed=0)
    assert summary["max_service_gap"] == pytest.approx(10.0)


def test_epochs_only_count_tenants_backlogged_together() -> None:
    rec = Recorder(1.0, 1.0)
    # a alone over [0, 5] gets everything: no epoch with two tenants, so no verdict.
    rec.queued("a", +1, 0.0)
    rec.service("a", 0.0, 5.0, 500, 0)
    rec.queued("a", -1, 5.0)
    # then a and b together over [5, 10], served equally.
    rec.queued("a", +1, 5.0)
    rec.queued("b", +1, 5.0)
    rec.service("a", 5.0, 10.0, 100, 0)
    rec.service("b", 5.0, 10.0, 100, 0)
    rec.queued("a", -1, 10.0)
    rec.queued("b", -1, 10.0)
    rows = [row("r1", "a", 0.0, 0.0, 10.0), row("r2", "b", 5.0, 5.0, 10.0)]
    summary = summarize(rows, rec, {"a": 1.0, "b": 1.0}, workers=1, policy="p", seed=0)
    assert summary["jain_index"] == pytest.approx(1.0)


def test_per_tenant_figures_and_format() -> None:
    rec = Recorder(1.0, 2.0)
    rows = [
        row("r1", "a", 0.0, 1.0, 3.0, tokens=(100, 10)),
        row("r2", "a", 1.0, 1.5, 4.0, tokens=(50, 5)),
        row("r3", "a", 2.0, None, None, admitted=False, reason="rate_requests"),
        row("r4", "b", 2.0, None, None, reason="deadline"),
    ]
    summary = summarize(rows, rec, {"a": 2.0, "b": 1.0}, workers=4, policy="fifo", seed=3)
    a = summary["tenants"]["a"]
    assert a["requests"] == 3
    assert a["admitted"] == 2
    assert a["completed"] == 2
    assert a["rejections"] == 1
    assert a["rejections_by_reason"] == {"rate_requests": 1}
    assert a["served_tokens"] == 165
    assert a["served_cost"] == pytest.approx(100 + 50 + 2 * 15)
    assert a["wait_p50_s"] == pytest.approx(0.75)
    assert a["ttft_p99_s"] == pytest.approx(0.6 + 0.99 * 0.5)
    assert summary["tenants"]["b"]["dropped"] == 1
    assert summary["max_request_cost"] == pytest.approx(120 / 2.0)
    assert summary["duration_s"] == 4.0
    text = format_summary(summary)
    assert "policy fifo (seed 3)" in text
    assert text.splitlines()[-2].startswith("a ")
