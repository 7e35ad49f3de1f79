"""Admission: quotas, caps, deadlines at submit, shedding, retry-after."""

from __future__ import annotations

import math

import pytest

from scheduler.errors import InvalidRequestError
from scheduler.policy.buckets import RateEstimator, TokenBucket
from scheduler.types import Admitted, RateLimit, Refusal, RefusalReason

from .support import admit, policy, req, tenant


def refused(result: Admitted | Refusal, reason: str) -> Refusal:
    assert isinstance(result, Refusal), result
    assert result.reason == reason, result
    return result


# ------------------------------------------------------------------ token bucket


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst_s=2.0, now=0.0)
    assert bucket.depth == 20.0
    assert bucket.wait_s(20.0, 0.0) == 0.0
    bucket.take(20.0, 0.0)
    assert bucket.wait_s(1.0, 0.0) == pytest.approx(0.1)
    assert bucket.wait_s(5.0, 0.0) == pytest.approx(0.5)
    assert bucket.wait_s(5.0, 0.5) == 0.0
    # It never holds more than its depth, however long it sat idle.
    assert bucket.wait_s(21.0, 1000.0) == 0.0
    bucket.take(20.0, 1000.0)
    assert bucket.level == pytest.approx(0.0)


def test_bucket_lets_a_request_larger_than_its_depth_through_when_full() -> None:
    bucket = TokenBucket(rate=100.0, burst_s=1.0, now=0.0)
    assert bucket.wait_s(250.0, 0.0) == 0.0  # would never fit otherwise
    bucket.take(250.0, 0.0)
    assert bucket.level == pytest.approx(-150.0)
    # ... and it pays back: the bucket is full again only after 2.5 s.
    assert bucket.wait_s(100.0, 1.0) == pytest.approx(1.5)
    assert bucket.wait_s(100.0, 2.5) == 0.0


def test_bucket_ignores_a_clock_that_steps_back() -> None:
    bucket = TokenBucket(rate=1.0, burst_s=1.0, now=10.0)
    bucket.take(1.0, 10.0)
    assert bucket.wait_s(1.0, 5.0) == pytest.approx(1.0)


def test_bucket_resize_keeps_how_full_it_was() -> None:
    bucket = TokenBucket(rate=10.0, burst_s=1.0, now=0.0)
    bucket.take(5.0, 0.0)
    bigger = bucket.resized(100.0, 2.0, 0.0)
    assert bigger.depth == 200.0
    assert bigger.level == pytest.approx(100.0)


def test_rate_estimator_decays_between_events() -> None:
    estimator = RateEstimator(tau_s=10.0)
    assert estimator.per_s(0.0) == 0.0
    for step in range(100):
        estimator.record(step * 0.1)
    # 10 events/s for 10 s with tau 10 s: about (1 - 1/e) of the steady rate.
    assert estimator.per_s(10.0) == pytest.approx(10 * (1 - math.exp(-1)), rel=0.1)
    assert estimator.per_s(1000.0) < 1e-6


# ------------------------------------------------------------------ quotas


def test_request_rate_refusal_names_the_limit_and_when_to_retry() -> None:
    p = policy("tidegate", tenant("a", rate=RateLimit(requests_per_s=2.0, burst_s=1.0)))
    admit(p, req("r1"), req("r2"))
    refusal = refused(p.submit(req("r3"), 0.0), RefusalReason.RATE_REQUESTS)
    assert refusal.retry_after_s == pytest.approx(0.5)
    assert "2 requests/s" in refusal.detail
    assert "a" in refusal.detail
    # Retrying at the advertised time succeeds; a bit earlier still fails.
    refused(p.submit(req("r3"), 0.49), RefusalReason.RATE_REQUESTS)
    assert isinstance(p.submit(req("r3"), 0.5), Admitted)


def test_token_rate_counts_input_plus_estimated_output() -> None:
    limit = RateLimit(tokens_per_s=1000.0, burst_s=1.0)
    p = policy("tidegate", tenant("a", rate=limit))
    admit(p, req("r1", input_tokens=600, output_tokens=200))  # 800 of 1000
    refusal = refused(
        p.submit(req("r2", input_tokens=300, output_tokens=100), 0.0), RefusalReason.RATE_TOKENS
    )
    # 400 needed, 200 left, 1000/s: 0.2 s.
    assert refusal.retry_after_s == pytest.approx(0.2)
    assert isinstance(p.submit(req("r2", input_tokens=300, output_tokens=100), 0.2), Admitted)


def test_retry_after_covers_both_buckets() -> None:
    limit = RateLimit(requests_per_s=1.0, tokens_per_s=100.0, burst_s=1.0)
    p = policy("tidegate", tenant("a", rate=limit))
    admit(p, req("r1", input_tokens=100, output_tokens=0))
    refusal = refused(
        p.submit(req("r2", input_tokens=100, output_tokens=0), 0.0), RefusalReason.RATE_REQUESTS
    )
    assert refusal.retry_after_s == pytest.approx(1.0)


def test_a_refused_request_takes_nothing_from_the_quota() -> None:
    limit = RateLimit(requests_per_s=2.0, tokens_per_s=100.0, burst_s=1.0)
    p = policy("tidegate", tenant("a", rate=limit, max_priority=0))
    admit(p, req("r1", input_tokens=60, output_tokens=0))  # 1 request and 40 tokens left
    # Refused for priority and for tokens: neither may eat the last request credit.
    refused(p.submit(req("r0", priority=1), 0.0), RefusalReason.PRIORITY_NOT_ALLOWED)
    refused(p.submit(req("big", input_tokens=50, output_tokens=0), 0.0), RefusalReason.RATE_TOKENS)
    admit(p, req("r2", input_tokens=40, output_tokens=0))
    refused(p.submit(req("r3", input_tokens=0, output_tokens=0), 0.0), RefusalReason.RATE_REQUESTS)


def test_tenants_have_separate_buckets() -> None:
    limit = RateLimit(requests_per_s=1.0, burst_s=1.0)
    p = policy("tidegate", tenant("a", rate=limit), tenant("b", rate=limit))
    admit(p, req("a1", "a"))
    refused(p.submit(req("a2", "a"), 0.0), RefusalReason.RATE_REQUESTS)
    admit(p, req("b1", "b"))


# ------------------------------------------------------------------ who may ask


def test_unknown_tenant_and_priority_above_max_are_refused() -> None:
    p = policy("tidegate", tenant("a", max_priority=1))
    refusal = refused(p.submit(req("r1", "ghost"), 0.0), RefusalReason.UNKNOWN_TENANT)
    assert "ghost" in refusal.detail
    refusal = refused(p.submit(req("r2", "a", priority=2), 0.0), RefusalReason.PRIORITY_NOT_ALLOWED)
    assert "max_priority 1" in refusal.detail
    admit(p, req("r3", "a", priority=1), req("r4", "a", priority=-5))
    stats = p.stats()
    assert stats.refusals == {
        RefusalReason.UNKNOWN_TENANT: 1,
        RefusalReason.PRIORITY_NOT_ALLOWED: 1,
    }
    assert stats.tenants["a"].refusals == {RefusalReason.PRIORITY_NOT_ALLOWED: 1}


def test_duplicate_ids_are_refused_while_live_and_reusable_after() -> None:
    p = policy("tidegate", window=1)
    admit(p, req("r1"))
    refused(p.submit(req("r1"), 0.0), RefusalReason.DUPLICATE)
    assert len(p.dispatch(0.0)) == 1
    refused(p.submit(req("r1"), 0.0), RefusalReason.DUPLICATE)
    p.complete("r1", 10, 10, 1.0)
    admit(p, req("r1"))


def test_deadline_already_passed_is_refused_at_submit() -> None:
    p = policy()
    refused(p.submit(req("r1", deadline_s=5.0), 5.0), RefusalReason.DEADLINE)
    admit(p, req("r2", deadline_s=5.0001), now=5.0)


def test_negative_token_counts_are_a_caller_bug() -> None:
    p = policy()
    with pytest.raises(InvalidRequestError, match="input_tokens -1"):
        p.submit(req("r1", input_tokens=-1), 0.0)


# ------------------------------------------------------------------ caps and shedding


def test_tenant_queue_cap() -> None:
    p = policy("tidegate", tenant("a", max_queued=2), tenant("b"), workers=0)
    admit(p, req("r1"), req("r2"))
    refusal = refused(p.submit(req("r3"), 0.0), RefusalReason.TENANT_QUEUE_FULL)
    assert refusal.retry_after_s > 0
    assert "max_queued is 2" in refusal.detail
    admit(p, req("b1", "b"))  # another tenant is unaffected


def test_tenant_cap_counts_queued_not_running() -> None:
    p = policy("tidegate", tenant("a", max_queued=1), workers=1, window=1)
    admit(p, req("r1"))
    assert len(p.dispatch(0.0)) == 1
    admit(p, req("r2"))


def test_global_queue_cap_and_its_retry_estimate() -> None:
    p = policy("tidegate", max_queued_total=3, shed_queue_fraction=1.0, workers=1, window=1)
    admit(p, req("r1"), req("r2", "b"), req("r3", "c"))
    refusal = refused(p.submit(req("r4"), 0.0), RefusalReason.GLOBAL_QUEUE_FULL)
    assert refusal.retry_after_s == pytest.approx(1.0)  # no rate seen yet: the fallback
    # With a dispatch rate observed, the estimate follows it.
    now = 0.0
    for _ in range(50):
        now += 0.1
        for d in p.dispatch(now):
            p.complete(d.request.request_id, 10, 10, now)
            admit(p, req(d.request.request_id + "x", d.request.tenant), now=now)
    refusal = refused(p.submit(req("late"), now), RefusalReason.GLOBAL_QUEUE_FULL)
    assert 0.05 <= refusal.retry_after_s < 1.0


def test_sheddable_requests_are_refused_first_under_pressure() -> None:
    p = policy("tidegate", max_queued_total=10, shed_queue_fraction=0.5, workers=0)
    admit(p, *(req(f"r{i}", priority=-1) for i in range(5)))
    refusal = refused(p.submit(req("s", priority=-1), 0.0), RefusalReason.SHED)
    assert refusal.retry_after_s > 0
    # Normal priority still gets in up to the global cap.
    admit(p, *(req(f"n{i}") for i in range(5)))
    refused(p.submit(req("n5"), 0.0), RefusalReason.GLOBAL_QUEUE_FULL)
