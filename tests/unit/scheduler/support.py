"""Small builders shared by the scheduler unit tests."""

from __future__ import annotations

import random
from types import MappingProxyType

from scheduler.policy import Policy, create_policy
from scheduler.types import (
    Admitted,
    Dispatch,
    RateLimit,
    Request,
    SchedulerConfig,
    TenantConfig,
    WindowConfig,
)


def tenant(
    name: str,
    weight: float = 1.0,
    max_priority: int = 2,
    max_queued: int = 10_000,
    rate: RateLimit | None = None,
) -> TenantConfig:
    return TenantConfig(
        name=name, weight=weight, max_priority=max_priority, max_queued=max_queued, rate=rate
    )


def config(
    *tenants: TenantConfig,
    window: WindowConfig | None = None,
    max_queued_total: int = 1_000_000,
    band_shares: tuple[float, ...] | None = None,
    shed_queue_fraction: float = 0.8,
) -> SchedulerConfig:
    return SchedulerConfig(
        tenants=MappingProxyType({t.name: t for t in tenants}),
        window=window if window is not None else WindowConfig(),
        max_queued_total=max_queued_total,
        band_shares=band_shares,
        shed_queue_fraction=shed_queue_fraction,
    )


def fixed_window(size: int) -> WindowConfig:
    """A window that never moves: the capacity tests reason about."""
    return WindowConfig(initial=size, minimum=size, maximum=size)


def policy(
    name: str = "tidegate",
    *tenants: TenantConfig,
    workers: int = 1,
    window: int | None = 1,
    seed: int = 0,
    max_queued_total: int = 1_000_000,
    band_shares: tuple[float, ...] | None = None,
    shed_queue_fraction: float = 0.8,
) -> Policy:
    """A policy with fixed windows of ``window`` (None: the default AIMD window)."""
    tenants = tenants or (tenant("a"), tenant("b"), tenant("c"))
    cfg = config(
        *tenants,
        window=fixed_window(window) if window else None,
        max_queued_total=max_queued_total,
        band_shares=band_shares,
        shed_queue_fraction=shed_queue_fraction,
    )
    made = create_policy(name, cfg, random.Random(seed))
    for index in range(workers):
        made.add_worker(f"w{index}", 0.0)
    return made


def req(
    rid: str,
    tenant_name: str = "a",
    priority: int = 0,
    input_tokens: int = 10,
    output_tokens: int = 10,
    deadline_s: float | None = None,
    arrival_s: float = 0.0,
) -> Request:
    return Request(
        request_id=rid,
        tenant=tenant_name,
        priority=priority,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        arrival_s=arrival_s,
        deadline_s=deadline_s,
    )


def admit(p: Policy, *requests: Request, now: float = 0.0) -> None:
    for request in requests:
        result = p.submit(request, now)
        assert isinstance(result, Admitted), result


def ids(dispatches: list[Dispatch]) -> list[str]:
    return [d.request.request_id for d in dispatches]


def run_one_at_a_time(p: Policy, count: int, now: float = 0.0) -> list[Dispatch]:
    """Dispatch and complete one request at a time (real usage = the estimate)."""
    out: list[Dispatch] = []
    for _ in range(count):
        got = p.dispatch(now)
        assert len(got) <= 1
        if not got:
            break
        request = got[0].request
        p.complete(request.request_id, request.input_tokens, request.output_tokens, now)
        out.extend(got)
    return out
