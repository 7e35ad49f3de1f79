"""Admission: who may queue at all, and when to try again if not.

Checks run cheapest and most permanent first (unknown tenant, priority,
deadline), then the shared queue limits, then the tenant's own quota, and a
request refused by any check takes nothing from the buckets: a refused
request must not eat the quota its retry needs.
"""

from __future__ import annotations

from scheduler.policy.tenants import TenantState
from scheduler.types import Refusal, RefusalReason, Request, SchedulerConfig

__all__ = ["MAX_RETRY_S", "MIN_RETRY_S", "Admission"]

# Retry-after bounds for queue-cap refusals, whose wait is an estimate:
# never "retry at once" (a hot loop), never longer than a minute (a hang).
MIN_RETRY_S = 0.05
MAX_RETRY_S = 60.0
# Without any observed dispatch rate a cap refusal has nothing to estimate from.
_FALLBACK_RETRY_S = 1.0


def _drain_estimate(excess: int, per_s: float) -> float:
    """Seconds for ``excess`` queued requests to leave at ``per_s``, bounded."""
    if per_s <= 0.0:
        return _FALLBACK_RETRY_S
    return min(MAX_RETRY_S, max(MIN_RETRY_S, excess / per_s))


class Admission:
    """Stateless checks over tenant state the core owns; see :meth:`check`."""

    __slots__ = ("_config",)

    def __init__(self, config: SchedulerConfig) -> None:
        self._config = config

    def reconfigure(self, config: SchedulerConfig) -> None:
        self._config = config

    def check(
        self,
        request: Request,
        tenant: TenantState | None,
        queued_total: int,
        global_dispatch_per_s: float,
        now: float,
    ) -> Refusal | None:
        """A refusal, or None after taking the request's cost from the tenant's buckets.

        ``retry_after_s`` is 0.0 for refusals that a retry of the same request
        cannot cure (unknown tenant, priority, passed deadline).
        """
        rid = request.request_id
        config = self._config
        if tenant is None or not tenant.configured:
            return Refusal(
                rid,
                RefusalReason.UNKNOWN_TENANT,
                0.0,
                f"tenant {request.tenant!r} is not in the tenant configuration",
            )
        if request.priority > tenant.config.max_priority:
            return Refusal(
                rid,
                RefusalReason.PRIORITY_NOT_ALLOWED,
                0.0,
                f"tenant {tenant.name}: priority {request.priority} is above its "
                f"max_priority {tenant.config.max_priority}",
            )
        if request.deadline_s is not None and request.deadline_s <= now:
            return Refusal(
                rid,
                RefusalReason.DEADLINE,
                0.0,
                f"deadline {request.deadline_s} is not after now {now}",
            )
        high_water = config.shed_queue_fraction * config.max_queued_total
        if request.priority < 0 and queued_total >= high_water:
            return Refusal(
                rid,
                RefusalReason.SHED,
                _drain_estimate(int(queued_total - high_water) + 1, global_dispatch_per_s),
                f"sheddable priority {request.priority} refused: {queued_total} queued is at "
                f"or above {config.shed_queue_fraction:g} x max_queued_total "
                f"{config.max_queued_total}",
            )
        if queued_total >= config.max_queued_total:
            return Refusal(
                rid,
                RefusalReason.GLOBAL_QUEUE_FULL,
                _drain_estimate(queued_total - config.max_queued_total + 1, global_dispatch_per_s),
                f"{queued_total} requests queued: max_queued_total is {config.max_queued_total}",
            )
        if tenant.queued >= tenant.config.max_queued:
            return Refusal(
                rid,
                RefusalReason.TENANT_QUEUE_FULL,
                _drain_estimate(
                    tenant.queued - tenant.config.max_queued + 1, tenant.dispatch_rate.per_s(now)
                ),
                f"tenant {tenant.name}: {tenant.queued} queued, max_queued is "
                f"{tenant.config.max_queued}",
            )
        return self._take_quota(request, tenant, now)

    @staticmethod
    def _take_quota(request: Request, tenant: TenantState, now: float) -> Refusal | None:
        tokens = request.input_tokens + request.output_tokens
        requests_bucket, tokens_bucket = tenant.request_bucket, tenant.token_bucket
        wait_requests = 0.0 if requests_bucket is None else requests_bucket.wait_s(1.0, now)
        wait_tokens = 0.0 if tokens_bucket is None else tokens_bucket.wait_s(tokens, now)
        if wait_requests > 0.0 or wait_tokens > 0.0:
            # Report the limit that binds first but wait until both would pass.
            if wait_requests > 0.0:
                reason = RefusalReason.RATE_REQUESTS
                assert requests_bucket is not None
                detail = f"tenant {tenant.name}: {requests_bucket.rate:g} requests/s"
            else:
                reason = RefusalReason.RATE_TOKENS
                assert tokens_bucket is not None
                detail = (
                    f"tenant {tenant.name}: {tokens_bucket.rate:g} tokens/s "
                    f"(request needs {tokens})"
                )
            return Refusal(request.request_id, reason, max(wait_requests, wait_tokens), detail)
        if requests_bucket is not None:
            requests_bucket.take(1.0, now)
        if tokens_bucket is not None:
            tokens_bucket.take(tokens, now)
        return None
