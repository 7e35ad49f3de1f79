"""The seeded bursty workload generator."""

from __future__ import annotations

import random
import statistics

import pytest

from scheduler.sim.traces import validate_rows
from scheduler.sim.workload import Burst, Stream, TokenDist, WorkloadSpec, generate

FIXED = TokenDist(100)


def stream(tenant: str = "a", rate: float = 10.0, **kw: object) -> Stream:
    return Stream(tenant, rate, FIXED, FIXED, **kw)  # type: ignore[arg-type]


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    spec = WorkloadSpec(30.0, (stream("a"), stream("b", 5.0)))
    assert generate(spec, 7) == generate(spec, 7)
    assert generate(spec, 7) != generate(spec, 8)


def test_rows_are_valid_and_sorted() -> None:
    spec = WorkloadSpec(20.0, (stream("a", 30.0), stream("b", 20.0, priority=2, sessions=3)))
    rows = generate(spec, 1)
    validate_rows(rows)
    assert {r.tenant for r in rows} == {"a", "b"}
    assert {r.priority for r in rows if r.tenant == "b"} == {2}
    assert {r.session for r in rows if r.tenant == "b"} <= {"b-0", "b-1", "b-2"}
    assert {r.session for r in rows if r.tenant == "a"} == {""}


def test_poisson_rate_is_about_right() -> None:
    rows = generate(WorkloadSpec(200.0, (stream(rate=20.0),)), 3)
    assert len(rows) == pytest.approx(4000, rel=0.05)


def test_uniform_arrivals_are_evenly_spaced() -> None:
    rows = generate(WorkloadSpec(1.0, (stream(rate=4.0, arrival="uniform"),)), 0)
    assert [r.arrival_s for r in rows] == [0.0, 0.25, 0.5, 0.75]


def test_uniform_keeps_its_phase_across_a_burst_edge() -> None:
    burst = Burst(start_s=1.0, duration_s=1.0, factor=2.0)
    rows = generate(WorkloadSpec(3.0, (stream(rate=2.0, arrival="uniform", bursts=(burst,)),)), 0)
    assert [r.arrival_s for r in rows] == [0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5]


def test_burst_multiplies_the_rate_inside_its_window() -> None:
    burst = Burst(start_s=50.0, duration_s=50.0, factor=10.0)
    rows = generate(WorkloadSpec(150.0, (stream(rate=4.0, bursts=(burst,)),)), 5)
    inside = sum(1 for r in rows if 50.0 <= r.arrival_s < 100.0)
    outside = len(rows) - inside
    assert inside == pytest.approx(2000, rel=0.1)
    assert outside == pytest.approx(400, rel=0.15)


def test_stream_window_and_zero_rate() -> None:
    spec = WorkloadSpec(10.0, (stream(rate=10.0, start_s=2.0, end_s=4.0), stream("b", 0.0)))
    rows = generate(spec, 0)
    assert rows
    assert all(2.0 <= r.arrival_s < 4.0 for r in rows)
    assert all(r.tenant == "a" for r in rows)


def test_token_distribution_median_and_p99() -> None:
    dist = TokenDist(median=800, p99=3000)
    rng = random.Random(1)
    samples = sorted(dist.sample(rng) for _ in range(20_000))
    assert statistics.median(samples) == pytest.approx(800, rel=0.05)
    assert samples[int(0.99 * len(samples))] == pytest.approx(3000, rel=0.1)


def test_token_distribution_bounds_and_constants() -> None:
    rng = random.Random(0)
    capped = TokenDist(median=100, p99=10_000, minimum=50, maximum=200)
    assert all(50 <= capped.sample(rng) <= 200 for _ in range(1000))
    assert TokenDist(0, minimum=0).sample(rng) == 0
    with pytest.raises(ValueError, match="p99"):
        TokenDist(median=10, p99=5)
    with pytest.raises(ValueError, match="duration_s"):
        WorkloadSpec(0.0, ())
