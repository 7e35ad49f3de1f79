"""The ``schedule`` benchmark: how long one dispatch decision takes with a deep queue.

It lives outside ``scheduler.policy`` because it reads the wall clock
(``time.perf_counter_ns``), which the pure core must never import.

The queue is filled with ``queued`` requests spread over ``tenants`` tenants
(weights 1/2/4, three priority bands, token counts varied), then each timed
call is one pull of one request by one worker: ``dispatch(now, worker,
limit=1)``. Between timed calls, untimed, the dispatched request completes
and a new one is submitted, so the queue depth stays at ``queued``.
A second, shorter phase times the push path, ``dispatch(now, limit=1)``,
where the policy also chooses the worker (``dispatch_fill_us_*``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from types import MappingProxyType

from scheduler.policy import Policy, create_policy
from scheduler.types import Request, SchedulerConfig, TenantConfig, WindowConfig

__all__ = ["run_schedule_bench"]

_WORKERS = 16
_WARMUP = 1_000


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _request(rng: random.Random, number: int, tenant_names: list[str]) -> Request:
    roll = rng.random()
    priority = 2 if roll < 0.05 else 1 if roll < 0.20 else 0
    return Request(
        request_id=f"r{number}",
        tenant=rng.choice(tenant_names),
        priority=priority,
        input_tokens=rng.randint(32, 4096),
        output_tokens=rng.randint(8, 1024),
    )


def run_schedule_bench(
    queued: int, tenants: int, seed: int, decisions: int = 20_000, policy: str = "tidegate"
) -> dict[str, float]:
    """Time ``decisions`` single-request dispatch decisions; figures in microseconds."""
    if queued < 1 or tenants < 1 or decisions < 1:
        raise ValueError(
            f"queued {queued}, tenants {tenants}, decisions {decisions}: each must be >= 1"
        )
    rng = random.Random(seed)
    names = [f"t{index:05d}" for index in range(tenants)]
    config = SchedulerConfig(
        tenants=MappingProxyType(
            {
                name: TenantConfig(
                    name, weight=rng.choice((1.0, 2.0, 4.0)), max_priority=2, max_queued=queued
                )
                for name in names
            }
        ),
        max_queued_total=2 * queued + _WORKERS,
        window=WindowConfig(initial=8, maximum=256),
    )
    scheduler = create_policy(policy, config, random.Random(seed))
    workers = [f"w{index}" for index in range(_WORKERS)]
    for worker in workers:
        scheduler.add_worker(worker, 0.0)

    started = time.perf_counter()
    number = 0
    for _ in range(queued):
        scheduler.submit(_request(rng, number, names), 0.0)
        number += 1
    setup_s = time.perf_counter() - started

    timings: list[float] = []
    now = 0.0
    clock = time.perf_counter_ns
    for step in range(_WARMUP + decisions):
        now += 0.001
        worker = workers[step % _WORKERS]
        before = clock()
        out = scheduler.dispatch(now, worker, 1)
        elapsed = clock() - before
        if step >= _WARMUP:
            timings.append(elapsed / 1000.0)
        for dispatch in out:
            request = dispatch.request
            scheduler.complete(request.request_id, request.input_tokens, request.output_tokens, now)
            scheduler.submit(_request(rng, number, names), now)
            number += 1
    timings.sort()
    depth = scheduler.queued()

    def refill(at: float) -> None:
        nonlocal number
        scheduler.submit(_request(rng, number, names), at)
        number += 1

    fill = _time_fill(scheduler, now, min(decisions, 5_000), refill)
    return {
        "queued": float(depth),
        "tenants": float(tenants),
        "decisions": float(decisions),
        "dispatch_us_p50": _percentile(timings, 0.50),
        "dispatch_us_p99": _percentile(timings, 0.99),
        "dispatch_us_p999": _percentile(timings, 0.999),
        "dispatch_us_max": timings[-1],
        "dispatch_us_mean": sum(timings) / len(timings),
        "dispatch_fill_us_p50": _percentile(fill, 0.50),
        "dispatch_fill_us_p99": _percentile(fill, 0.99),
        "setup_s": setup_s,
    }


def _time_fill(
    scheduler: Policy, now: float, decisions: int, refill: Callable[[float], None]
) -> list[float]:
    """Time decisions of the push path, ``dispatch(now)``, where the policy picks the worker.

    One decision per call (``limit=1``); every worker keeps one free slot by
    completing, untimed, what the previous call dispatched.
    """
    timings: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(decisions):
        now += 0.001
        before = clock()
        out = scheduler.dispatch(now, None, 1)
        timings.append((clock() - before) / 1000.0)
        for dispatch in out:
            request = dispatch.request
            scheduler.complete(request.request_id, request.input_tokens, request.output_tokens, now)
            refill(now)
    timings.sort()
    return timings
