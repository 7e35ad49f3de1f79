"""Per-tenant live state: its config, its quota buckets and its counters."""

from __future__ import annotations

from collections import Counter

from scheduler.policy.buckets import RateEstimator, TokenBucket
from scheduler.types import RateLimit, TenantConfig

__all__ = ["TenantState"]


class TenantState:
    """Mutable state of one tenant. A tenant removed from the config keeps its
    state (``configured`` turns False) so its queued requests still run."""

    __slots__ = (
        "admitted",
        "charged",
        "completed",
        "config",
        "configured",
        "dispatch_rate",
        "dispatched",
        "dropped",
        "in_flight",
        "name",
        "preempted",
        "queued",
        "refusals",
        "request_bucket",
        "served_input_tokens",
        "served_output_tokens",
        "token_bucket",
        "weight",
    )

    def __init__(self, config: TenantConfig, now: float) -> None:
        self.name = config.name
        self.config = config
        self.configured = True
        self.weight = config.weight
        self.request_bucket: TokenBucket | None = None
        self.token_bucket: TokenBucket | None = None
        self._set_rate(config.rate, now)
        self.queued = 0
        self.in_flight = 0
        self.admitted = 0
        self.dispatched = 0
        self.completed = 0
        self.preempted = 0
        self.served_input_tokens = 0
        self.served_output_tokens = 0
        self.charged = 0.0
        self.refusals: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.dispatch_rate = RateEstimator()

    def _set_rate(self, rate: RateLimit | None, now: float) -> None:
        old_requests, old_tokens = self.request_bucket, self.token_bucket
        self.request_bucket = self._bucket(
            old_requests, None if rate is None else rate.requests_per_s, rate, now
        )
        self.token_bucket = self._bucket(
            old_tokens, None if rate is None else rate.tokens_per_s, rate, now
        )

    @staticmethod
    def _bucket(
        old: TokenBucket | None, per_s: float | None, rate: RateLimit | None, now: float
    ) -> TokenBucket | None:
        if per_s is None or rate is None:
            return None
        if old is None:
            return TokenBucket(per_s, rate.burst_s, now)
        return old.resized(per_s, rate.burst_s, now)

    def reconfigure(self, config: TenantConfig, now: float) -> None:
        """Hot reload: new weight and quota; queued requests and counters stay."""
        self.config = config
        self.configured = True
        self.weight = config.weight
        self._set_rate(config.rate, now)
