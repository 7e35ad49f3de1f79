"""Ordering: strict bands, VTC shares inside a band, idle lifting, FIFO per tenant."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from scheduler.types import Request

from .support import admit, ids, policy, req, run_one_at_a_time, tenant


def cost(request: Request, output_tokens: int | None = None) -> float:
    out = request.output_tokens if output_tokens is None else output_tokens
    return 1.0 * request.input_tokens + 2.0 * out


def test_higher_band_first_whatever_the_arrival_order() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("low1", "a", 0), req("low2", "b", 0), req("mid", "c", 1), req("top", "a", 2))
    order = ids(run_one_at_a_time(p, 4))
    assert order[:2] == ["top", "mid"]
    assert sorted(order[2:]) == ["low1", "low2"]


def test_fifo_inside_a_tenant() -> None:
    p = policy("tidegate", workers=1, window=1)
    for index in range(10):
        admit(p, req(f"a{index}", "a"), req(f"b{index}", "b", input_tokens=index * 7 + 1))
    order = ids(run_one_at_a_time(p, 20))
    assert [rid for rid in order if rid.startswith("a")] == [f"a{i}" for i in range(10)]
    assert [rid for rid in order if rid.startswith("b")] == [f"b{i}" for i in range(10)]


def _saturated_run(
    weights: dict[str, float], steps: int, seed: int, exact_estimates: bool
) -> tuple[list[dict[str, float]], float]:
    """One worker, window 1, every tenant backlogged throughout; returns the
    served cost per tenant after each step and U = max(real cost / weight)."""
    rng = random.Random(seed)
    p = policy("tidegate", *(tenant(n, weight=w) for n, w in weights.items()), window=1)
    real_output: dict[str, int] = {}
    for index in range(steps + 10):
        for name in weights:
            rid = f"{name}-{index}"
            real_output[rid] = rng.randint(1, 400)
            estimate = real_output[rid] if exact_estimates else 100
            admit(p, req(rid, name, input_tokens=rng.randint(1, 800), output_tokens=estimate))
    served = dict.fromkeys(weights, 0.0)
    history: list[dict[str, float]] = []
    biggest = 0.0
    for _ in range(steps):
        [d] = p.dispatch(0.0)
        request = d.request
        real = real_output[request.request_id]
        p.complete(request.request_id, request.input_tokens, real, 0.0)
        served[request.tenant] += cost(request, real)
        biggest = max(biggest, cost(request, real) / weights[request.tenant])
        history.append(dict(served))
    for name in weights:
        assert p.stats().tenants[name].queued > 0, "every tenant stays backlogged"
    return history, biggest


@pytest.mark.parametrize("exact_estimates", [True, False])
def test_weighted_shares_1_2_4_stay_within_the_vtc_bound(exact_estimates: bool) -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 4.0}
    history, bound = _saturated_run(weights, steps=1500, seed=7, exact_estimates=exact_estimates)
    largest_request_cost = 800 + 2 * 400
    assert bound <= largest_request_cost
    for served in history:
        normalised = [served[name] / weight for name, weight in weights.items()]
        # Tighter than the 2 x largest request cost: U = max(cost / weight).
        assert max(normalised) - min(normalised) <= bound + 1e-6
    final = history[-1]
    total = sum(final.values())
    for name, weight in weights.items():
        assert final[name] / total == pytest.approx(weight / 7.0, abs=0.01)


def test_stats_expose_charge_and_counters() -> None:
    p = policy("tidegate", tenant("a", weight=2.0), window=1)
    admit(p, req("r1", "a", input_tokens=100, output_tokens=50))
    assert len(p.dispatch(0.0)) == 1
    assert p.stats().tenants["a"].charged == 200.0  # estimate: 100 + 2 x 50
    assert p.stats().tenants["a"].virtual_counters == {0: 100.0}
    p.complete("r1", 100, 10, 1.0)  # real usage: 100 + 2 x 10
    stats = p.stats().tenants["a"]
    assert stats.charged == 120.0
    assert stats.virtual_counters == {0: 60.0}
    assert stats.served_tokens == 110
    assert (stats.served_input_tokens, stats.served_output_tokens) == (100, 10)


def test_over_estimates_are_corrected_so_shares_follow_real_usage() -> None:
    # Tenant a always claims 1000 output tokens and uses 10; b is honest.
    p = policy("tidegate", window=1)
    for index in range(200):
        admit(p, req(f"a{index}", "a", input_tokens=10, output_tokens=1000))
        admit(p, req(f"b{index}", "b", input_tokens=10, output_tokens=10))
    served: Counter[str] = Counter()
    for _ in range(100):
        [d] = p.dispatch(0.0)
        p.complete(d.request.request_id, 10, 10, 0.0)
        served[d.request.tenant] += 1
    assert abs(served["a"] - served["b"]) <= 2


def test_a_tenant_back_from_idle_is_lifted_to_the_active_minimum() -> None:
    p = policy("tidegate", window=1)
    for index in range(200):
        admit(p, req(f"a{index}", "a"), req(f"b{index}", "b"))
    run_one_at_a_time(p, 100)
    counters = p.stats().tenants
    active_min = min(counters["a"].virtual_counters[0], counters["b"].virtual_counters[0])
    assert active_min == pytest.approx(50 * 30.0)
    # c was idle all along: it returns at the active minimum, not at zero ...
    admit(p, *(req(f"c{index}", "c") for index in range(60)))
    assert p.stats().tenants["c"].virtual_counters[0] == pytest.approx(active_min)
    # ... so it gets its fair third from now on, not a monopoly to "catch up".
    served = Counter(d.request.tenant for d in run_one_at_a_time(p, 60))
    assert served == {"a": 20, "b": 20, "c": 20}


def test_returning_to_an_empty_band_starts_from_its_virtual_time() -> None:
    p = policy("tidegate", window=1)
    admit(p, *(req(f"a{index}", "a") for index in range(50)))
    run_one_at_a_time(p, 50)  # a alone: its counter runs to 1500, then the band empties
    assert p.queued() == 0
    # b never ran; arriving first into the empty band, it starts at the band's
    # virtual time rather than 0, so a is not locked out for 50 requests.
    admit(p, *(req(f"b{index}", "b") for index in range(20)))
    admit(p, *(req(f"a{index}x", "a") for index in range(20)))
    first_twenty = Counter(d.request.tenant for d in run_one_at_a_time(p, 20))
    assert abs(first_twenty["a"] - first_twenty["b"]) <= 2


def test_band_shares_serve_lower_bands_by_weight_once_saturated() -> None:
    p = policy("tidegate", window=1, band_shares=(6.0, 3.0, 1.0))
    for index in range(300):
        admit(p, req(f"t{index}", "a", 2), req(f"m{index}", "b", 1), req(f"l{index}", "c", 0))
    served = Counter(d.request.priority for d in run_one_at_a_time(p, 200))
    assert served[2] == pytest.approx(120, abs=2)
    assert served[1] == pytest.approx(60, abs=2)
    assert served[0] == pytest.approx(20, abs=2)


def test_without_band_shares_a_low_band_waits_for_the_higher_one() -> None:
    p = policy("tidegate", window=1)
    for index in range(50):
        admit(p, req(f"t{index}", "a", 2), req(f"l{index}", "c", 0))
    served = Counter(d.request.priority for d in run_one_at_a_time(p, 50))
    assert served == {2: 50}
