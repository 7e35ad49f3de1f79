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
    "BandStats",
    "Dispatch",
    "Dropped",
    "PolicyStats",
    "Preempt",
    "RateLimit",
    "Refusal",
    "RefusalReason",
    "Request",
    "SchedulerConfig",
    "TenantConfig",
    "TenantStats",
    "WindowConfig",
    "WorkerFeedback",
    "WorkerStats",
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
    """AIMD window per worker: the requests it may hold. After a cut a worker
    can hold more than its window for a while; it drains back at a paced rate
    (``scheduler.policy.drain``) rather than stopping dispatch."""

    initial: int = 8
    minimum: int = 1
    maximum: int = 256
    # Additive step per good report (worker filled its window, nothing near a limit).
    increase: float = 1.0
    # Multiplicative factor on saturation; also the floor of an engine-queue cut,
    # which never goes deeper than one such step.
    decrease: float = 0.7
    # Above it: cut to what the engine runs if the engine queues, else x decrease.
    target_ttft_s: float = 1.0
    target_tpot_s: float = 0.1  # above it: x decrease
    # An engine queue deeper than this cuts the window to what the engine runs
    # (in_flight - queue_depth); any queue at all holds growth.
    max_queue_depth: int = 4
    max_kv_usage: float = 0.9  # above it: x decrease
    max_gpu_mem: float = 0.95  # above it: x decrease
    # Added by the policy core (defaults keep earlier callers unchanged):
    # growth holds (never shrinks) when KV cache or GPU memory reach
    # ``near_target`` of their limits, or when GPU utilisation is at or above
    # ``high_gpu_util`` with a latency within ``near_target`` of its target.
    # High utilisation alone is the goal, never a reason to shrink.
    high_gpu_util: float = 0.9
    near_target: float = 0.8
    # The window changes at most once per interval, so a burst of reports
    # about the same overload shrinks it once, not once per report.
    adjust_interval_s: float = 0.25
    # Slow start (TCP's): until the window is first cut or first holds near a
    # limit, a good report doubles it instead of adding ``increase``, so a
    # fresh worker reaches a big engine's batch in a few reports, not hundreds.
    slow_start: bool = True


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
    # Added by the policy core: sheddable (negative priority) requests are
    # refused once the global queue holds this fraction of max_queued_total.
    shed_queue_fraction: float = 0.8


def _empty_mapping() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TenantStats:
    """One tenant's figures in a :class:`PolicyStats` snapshot.

    ``charged`` is the VTC cost (input_w x input + output_w x output) booked
    so far: estimates for running requests, real usage for finished ones.
    ``virtual_counters`` maps band -> the tenant's virtual token counter there.
    """

    queued: int
    in_flight: int
    admitted: int
    dispatched: int
    completed: int
    preempted: int
    served_input_tokens: int
    served_output_tokens: int
    charged: float
    weight: float
    virtual_counters: Mapping[int, float]
    refusals: Mapping[str, int] = field(default_factory=_empty_mapping)
    dropped: Mapping[str, int] = field(default_factory=_empty_mapping)

    @property
    def served_tokens(self) -> int:
        return self.served_input_tokens + self.served_output_tokens


@dataclass(frozen=True, slots=True)
class BandStats:
    queued: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class WorkerStats:
    window: int  # requests it may hold now (the AIMD window, rounded down, clamped)
    window_exact: float  # the AIMD state before rounding
    in_flight: int
    load_tokens: int  # estimated tokens of its running requests
    increases: int
    decreases: int


@dataclass(frozen=True, slots=True)
class PolicyStats:
    """A frozen snapshot of a policy's state, for metrics and the simulator."""

    policy: str
    queued: int
    in_flight: int
    admitted: int
    dispatched: int
    completed: int
    cancelled: int
    preemptions: int
    requeued: int  # put back by preemption, lease expiry or worker removal
    tenants: Mapping[str, TenantStats]
    bands: Mapping[int, BandStats]
    workers: Mapping[str, WorkerStats]
    refusals: Mapping[str, int]  # by RefusalReason, all tenants (incl. unknown ones)
    dropped: Mapping[str, int]  # by RefusalReason (deadline)
