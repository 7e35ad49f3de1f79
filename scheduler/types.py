"""Frozen values the scheduler's policy core takes and returns.

Pure: standard library only. Times are seconds on whatever clock the caller
runs (virtual in the simulator, monotonic in the server); the core never
reads a clock itself, it is handed ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "Admitted",
    "Dispatch",
    "Dropped",
    "Preempt",
    "RateLimit",
    "Refusal",
    "RefusalReason",
    "Request",
    "SchedulerConfig",
    "TenantConfig",
    "WindowConfig",
    "WorkerFeedback",
]


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request as the scheduler sees it (no payload)."""

    request_id: str
    tenant: str
    priority: int = 0
    input_tokens: int = 0
    output_tokens: int = 0  # estimate; the real figure arrives with complete()
    arrival_s: float = 0.0
    deadline_s: float | None = None  # absolute, same clock as ``now``
    session: str = ""


class RefusalReason:
    """The closed set of reasons a request is refused or dropped (metric label values)."""

    UNKNOWN_TENANT = "unknown_tenant"
    PRIORITY_NOT_ALLOWED = "priority_not_allowed"
    RATE_REQUESTS = "rate_requests"
    RATE_TOKENS = "rate_tokens"
    TENANT_QUEUE_FULL = "tenant_queue_full"
    GLOBAL_QUEUE_FULL = "global_queue_full"
    SHED = "shed"  # sheddable (negative priority) refused under pressure
    DEADLINE = "deadline"  # still queued at its deadline
    DUPLICATE = "duplicate"  # request id already known

    ALL: tuple[str, ...] = (
        UNKNOWN_TENANT,
        PRIORITY_NOT_ALLOWED,
        RATE_REQUESTS,
        RATE_TOKENS,
        TENANT_QUEUE_FULL,
        GLOBAL_QUEUE_FULL,
        SHED,
        DEADLINE,
        DUPLICATE,
    )


@dataclass(frozen=True, slots=True)
class Admitted:
    request_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused request: why, and when trying again could succeed."""

    request_id: str
    reason: str  # one of RefusalReason
    retry_after_s: float
    detail: str = ""  # human words naming the limit, e.g. "tenant acme: 50 requests/s"


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Run ``request`` on ``worker_id``. ``done_output_tokens`` > 0 after a preemption."""

    request: Request
    worker_id: str
    done_output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Preempt:
    """Stop ``request_id`` on ``worker_id`` and hand it back with preempted()."""

    request_id: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A queued request removed without running (deadline passed)."""

    request: Request
    reason: str  # one of RefusalReason


@dataclass(frozen=True, slots=True)
class WorkerFeedback:
    """Saturation signals from one worker; any may be unknown (None).

    Fractions are in [0, 1]. Latencies are seconds.
    """

    ttft_s: float | None = None  # time to first token of a recent request
    tpot_s: float | None = None  # time per output token
    queue_depth: int | None = None  # engine's own waiting requests
    kv_usage: float | None = None  # KV-cache use
    gpu_util: float | None = None
    gpu_mem: float | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_s: float | None = None
    tokens_per_s: float | None = None
    burst_s: float = 1.0


@dataclass(frozen=True, slots=True)
class TenantConfig:
    name: str
    weight: float = 1.0
    max_priority: int = 0
    max_queued: int = 10_000
    rate: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """AIMD window per worker (maximum requests in flight)."""

    initial: int = 8
    minimum: int = 1
    maximum: int = 256
    increase: float = 1.0  # additive step per good interval
    decrease: float = 0.7  # multiplicative factor on saturation
    target_ttft_s: float = 1.0
    target_tpot_s: float = 0.1
    max_queue_depth: int = 4
    max_kv_usage: float = 0.9
    max_gpu_mem: float = 0.95


def _empty_tenants() -> Mapping[str, TenantConfig]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    tenants: Mapping[str, TenantConfig] = field(default_factory=_empty_tenants)
    max_queued_total: int = 1_000_000
    input_token_weight: float = 1.0  # VTC charge per input token
    output_token_weight: float = 2.0  # VTC charge per output token
    band_shares: tuple[float, ...] | None = None  # weighted cross-band sharing, highest band first
    window: WindowConfig = field(default_factory=WindowConfig)
