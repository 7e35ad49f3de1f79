"""The discrete-event loop, driving the real policy core on small traces."""

from __future__ import annotations

import random
from types import MappingProxyType

import pytest

from scheduler.policy import create_policy
from scheduler.sim.errors import SimulationStalledError
from scheduler.sim.fleet import FleetConfig, FleetModel
from scheduler.sim.simulate import SimOptions, Simulation, simulate
from scheduler.sim.traces import TraceRow
from scheduler.types import (
    Dispatch,
    RateLimit,
    RefusalReason,
    SchedulerConfig,
    TenantConfig,
    WindowConfig,
)

MODEL = FleetModel(
    prefill_tokens_per_s=1000.0,
    decode_step_s=0.01,
    decode_step_per_seq_s=0.0,
    max_batch=4,
    kv_capacity_tokens=100_000,
)


def config(*tenants: TenantConfig, window: WindowConfig | None = None) -> SchedulerConfig:
    return SchedulerConfig(
        tenants=MappingProxyType({t.name: t for t in tenants}),
        window=window or WindowConfig(initial=4, maximum=4),
    )


def trace(n: int, tenants: tuple[str, ...] = ("a", "b"), gap: float = 0.01) -> list[TraceRow]:
    return [TraceRow(i * gap, tenants[i % len(tenants)], 0, 50, 20) for i in range(n)]


def test_single_request_timing_on_an_idle_fleet() -> None:
    result = simulate(
        [TraceRow(1.0, "a", 0, 100, 11)],
        config(TenantConfig("a")),
        FleetConfig(workers=1, model=MODEL),
    )
    (row,) = result.rows
    assert row.admitted
    assert row.reject_reason == ""
    assert row.dispatch_s == pytest.approx(1.0)
    assert row.first_token_s == pytest.approx(1.1)
    assert row.finish_s == pytest.approx(1.1 + 10 * 0.01)
    assert row.worker == "w0"
    assert row.preemptions == 0
    assert result.summary["completed"] == 1


def test_every_admitted_request_finishes_once_and_rows_keep_trace_order() -> None:
    rows = trace(300)
    result = simulate(rows, config(TenantConfig("a"), TenantConfig("b")), FleetConfig(2, MODEL))
    assert [r.request_id for r in result.rows] == [f"r{i:03d}" for i in range(1, 301)]
    assert all(r.finish_s is not None for r in result.rows)
    for r in result.rows:
        assert r.dispatch_s is not None
        assert r.first_token_s is not None
        assert r.finish_s is not None
        assert r.arrival_s <= r.dispatch_s <= r.first_token_s <= r.finish_s
    assert result.stats.completed == 300
    assert result.stats.queued == 0
    assert result.stats.in_flight == 0


def test_same_seed_same_events() -> None:
    rows = trace(200, gap=0.003)
    cfg = config(TenantConfig("a"), TenantConfig("b", weight=3))
    fleet = FleetConfig(3, MODEL)
    assert simulate(rows, cfg, fleet, seed=5).rows == simulate(rows, cfg, fleet, seed=5).rows


def test_refusals_are_rows_with_reasons() -> None:
    rows = [
        TraceRow(0.0, "ghost", 0, 1, 1),
        TraceRow(0.0, "a", 3, 1, 1),  # above max_priority
        *(TraceRow(0.001 * i, "a", 0, 1, 1) for i in range(5)),
    ]
    cfg = config(TenantConfig("a", rate=RateLimit(requests_per_s=1.0, burst_s=2.0)))
    result = simulate(rows, cfg, FleetConfig(1, MODEL))
    reasons = [r.reject_reason for r in result.rows if not r.admitted]
    assert reasons[:2] == [RefusalReason.UNKNOWN_TENANT, RefusalReason.PRIORITY_NOT_ALLOWED]
    assert RefusalReason.RATE_REQUESTS in reasons
    refused = [r for r in result.rows if not r.admitted]
    assert all(r.dispatch_s is None and r.worker == "" for r in refused)
    assert result.summary["tenants"]["ghost"]["rejections"] == 1
    assert result.summary["tenants"]["ghost"]["weight"] is None


def test_deadlines_drop_queued_requests() -> None:
    rows = [TraceRow(0.0, "a", 0, 500, 200) for _ in range(20)]
    result = simulate(
        rows,
        config(TenantConfig("a"), window=WindowConfig(initial=2, maximum=2)),
        FleetConfig(1, MODEL),
        options=SimOptions(deadline_s=1.0),
    )
    dropped = [r for r in result.rows if r.reject_reason == RefusalReason.DEADLINE]
    assert dropped, "some requests wait past their deadline"
    assert all(r.admitted and r.dispatch_s is None for r in dropped)
    assert result.summary["dropped"] == len(dropped)
    assert all(r.finish_s is not None for r in result.rows if r not in dropped)


def test_preemption_serves_the_high_band_and_the_victim_resumes() -> None:
    # One worker holding 2: two long low-priority requests fill it, then an
    # urgent one arrives and should not wait for them.
    rows = [
        TraceRow(0.0, "bulk", 0, 100, 500),
        TraceRow(0.0, "bulk", 0, 100, 500),
        TraceRow(1.0, "vip", 2, 100, 10),
    ]
    cfg = config(
        TenantConfig("bulk"),
        TenantConfig("vip", max_priority=2),
        window=WindowConfig(initial=2, maximum=2),
    )
    result = simulate(rows, cfg, FleetConfig(1, MODEL))
    bulk = [r for r in result.rows if r.tenant == "bulk"]
    vip = next(r for r in result.rows if r.tenant == "vip")
    assert vip.wait_s == pytest.approx(0.0)
    assert sum(r.preemptions for r in bulk) == 1
    victim = next(r for r in bulk if r.preemptions)
    assert victim.finish_s is not None
    assert victim.output_tokens == 500
    assert vip.finish_s is not None
    assert vip.finish_s < victim.finish_s
    assert result.summary["preemptions"] == 1


def test_output_estimate_is_what_the_policy_sees() -> None:
    rows = trace(50)
    cfg = config(TenantConfig("a"), TenantConfig("b"))
    result = simulate(
        rows, cfg, FleetConfig(1, MODEL), options=SimOptions(output_estimate_tokens=1)
    )
    # The fleet still makes the real output; the policy was charged the real usage at the end.
    assert all(r.output_tokens == 20 for r in result.rows)
    assert result.stats.tenants["a"].served_output_tokens == 25 * 20


class NeverDispatch:
    """A policy that admits everything and never dispatches (a broken policy)."""

    def __init__(self) -> None:
        self.inner = create_policy("fifo", config(TenantConfig("a")), random.Random(0))
        self.name = "broken"

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def dispatch(
        self, now: float, worker_id: str | None = None, limit: int | None = None
    ) -> list[Dispatch]:
        return []


def test_a_policy_that_stops_dispatching_is_reported() -> None:
    sim = Simulation(
        trace(3, ("a",)),
        config(TenantConfig("a")),
        FleetConfig(1, MODEL),
        policy=NeverDispatch(),  # type: ignore[arg-type]
    )
    with pytest.raises(SimulationStalledError, match="3 requests are queued"):
        sim.run()


@pytest.mark.parametrize("name", ["tidegate", "fifo", "round-robin", "strict-priority"])
def test_every_policy_drains_a_mixed_trace(name: str) -> None:
    rows = [
        TraceRow(i * 0.004, ("a", "b", "c")[i % 3], (0, 1, -1)[i % 3], 40 + i % 50, 5 + i % 30)
        for i in range(400)
    ]
    cfg = config(
        TenantConfig("a"),
        TenantConfig("b", weight=2, max_priority=1),
        TenantConfig("c", weight=4),
    )
    result = simulate(rows, cfg, FleetConfig(2, MODEL), policy_name=name, seed=1)
    assert result.summary["policy"] == name
    assert result.summary["completed"] == result.summary["admitted"] == 400
    assert result.summary["busy_fraction_backlogged"] == pytest.approx(1.0)
