"""The baselines behind the same interface: fifo, round-robin, strict-priority."""

from __future__ import annotations

import pytest

from scheduler.types import RateLimit, Refusal, RefusalReason

from .support import admit, ids, policy, req, run_one_at_a_time, tenant


def test_fifo_is_admission_order_whatever_tenant_or_priority() -> None:
    p = policy("fifo", workers=1, window=1)
    admit(p, req("a1", "a", 0), req("a2", "a", 0), req("b1", "b", 2), req("c1", "c", -1))
    assert ids(run_one_at_a_time(p, 4)) == ["a1", "a2", "b1", "c1"]


def test_fifo_puts_a_lost_request_back_at_its_place() -> None:
    p = policy("fifo", workers=1, window=2)
    admit(p, req("r1", "a"), req("r2", "b"))
    p.dispatch(0.0)
    admit(p, req("r3", "c"))
    p.lease_expired("r2", 1.0)
    p.lease_expired("r1", 1.0)
    assert ids(p.dispatch(1.0)) == ["r1", "r2"]


def test_round_robin_takes_one_request_per_tenant_in_turn() -> None:
    p = policy("round-robin", workers=1, window=1)
    admit(p, req("a1", "a"), req("a2", "a"), req("a3", "a"), req("b1", "b"), req("b2", "b"))
    admit(p, req("c1", "c", 2))
    assert ids(run_one_at_a_time(p, 6)) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_round_robin_ignores_weights() -> None:
    p = policy("round-robin", tenant("a", weight=10.0), tenant("b"), workers=1, window=1)
    for index in range(10):
        admit(p, req(f"a{index}", "a"), req(f"b{index}", "b"))
    tenants = [d.request.tenant for d in run_one_at_a_time(p, 10)]
    assert tenants.count("a") == tenants.count("b") == 5


def test_strict_priority_is_bands_then_fifo_without_fairness() -> None:
    p = policy("strict-priority", tenant("a"), tenant("b", weight=100.0), workers=1, window=1)
    admit(p, req("a1", "a", 0), req("a2", "a", 0), req("a3", "a", 0), req("b1", "b", 0))
    admit(p, req("top", "a", 1))
    assert ids(run_one_at_a_time(p, 5)) == ["top", "a1", "a2", "a3", "b1"]


@pytest.mark.parametrize("name", ["fifo", "round-robin", "strict-priority"])
def test_baselines_share_admission_and_deadlines(name: str) -> None:
    p = policy(name, tenant("a", max_priority=0, rate=RateLimit(requests_per_s=1.0)), workers=0)
    admit(p, req("r1", deadline_s=1.0))
    refusal = p.submit(req("r2"), 0.0)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == RefusalReason.RATE_REQUESTS
    refusal = p.submit(req("r3", priority=1), 5.0)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == RefusalReason.PRIORITY_NOT_ALLOWED
    assert [d.request.request_id for d in p.expire(2.0)] == ["r1"]
    assert p.queued() == 0


@pytest.mark.parametrize("name", ["fifo", "round-robin", "strict-priority"])
def test_baselines_handle_cancel_and_requeue(name: str) -> None:
    p = policy(name, workers=1, window=1)
    admit(p, req("a1", "a"), req("a2", "a"), req("b1", "b"))
    assert p.cancel("a2", 0.0)
    [d] = p.dispatch(0.0)
    p.lease_expired(d.request.request_id, 0.0)
    order = ids(run_one_at_a_time(p, 5))
    assert sorted(order) == ["a1", "b1"]
    assert p.queued() == p.in_flight() == 0
