"""Fairness over a sliding window, from periodic samples of the tenants' figures.

Pure: the caller samples (``now`` is an argument) and reads figures back.

What is measured. Between two samples, a tenant that had requests waiting
at the first one was *backlogged* for that interval: it wanted more than it
got, so its service then is what the scheduler chose to give it. For each
tenant backlogged at some point in the window::

    x_i = tokens served to i while backlogged / (weight_i x time i was backlogged)

is its weight-normalised service rate. A weighted-fair scheduler makes every
``x_i`` equal; Jain's index ``(sum x)^2 / (n * sum x^2)`` is 1 then and falls
towards ``1/n`` as one tenant takes everything. Tenants that were never
backlogged are left out: a tenant that asked for little and got all of it
was treated fairly whatever its share.

Shares, for the dashboards: a tenant's share of all tokens served in the
window, beside the share its weight entitles it to among the tenants active
in the window (served or backlogged).

Served tokens are counted when a request completes (real usage), so the
window should hold many requests' lifetimes: a minute by default.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from types import MappingProxyType

__all__ = ["FairnessFigures", "FairnessWindow", "TenantSample", "jain_index"]


@dataclass(frozen=True, slots=True)
class TenantSample:
    """One tenant at one sample: tokens served so far, its weight, whether it waits."""

    served: float
    weight: float
    backlogged: bool


def _empty() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FairnessFigures:
    """``jain`` is None while no tenant was backlogged and served (nothing to judge)."""

    jain: float | None
    backlogged: int
    service_share: Mapping[str, float] = field(default_factory=_empty)
    weight_share: Mapping[str, float] = field(default_factory=_empty)


def jain_index(values: list[float]) -> float | None:
    """Jain's fairness index of non-negative ``values``; None when all are 0 or none given."""
    top = max(values, default=0.0)
    if top <= 0:
        return None
    scaled = [v / top for v in values]  # the index is scale-free; this keeps squares in range
    total = sum(scaled)
    return total * total / (len(scaled) * sum(v * v for v in scaled))


class FairnessWindow:
    """Samples over the last ``window_s`` seconds (plus one just before, as the baseline)."""

    def __init__(self, window_s: float = 60.0) -> None:
        if not window_s > 0:
            raise ValueError(f"fairness window_s is {window_s!r}; it must be > 0")
        self.window_s = window_s
        self._samples: deque[tuple[float, Mapping[str, TenantSample]]] = deque()

    def sample(self, now: float, tenants: Mapping[str, TenantSample]) -> None:
        if self._samples and now < self._samples[-1][0]:
            raise ValueError(f"sample at {now} is before the last one ({self._samples[-1][0]})")
        self._samples.append((now, dict(tenants)))
        start = now - self.window_s
        while len(self._samples) > 2 and self._samples[1][0] <= start:
            self._samples.popleft()

    def figures(self) -> FairnessFigures:
        samples = list(self._samples)
        served: dict[str, float] = {}
        waited_s: dict[str, float] = {}
        served_waiting: dict[str, float] = {}
        for (t0, before), (t1, after) in pairwise(samples):
            for tenant, now in after.items():
                then = before.get(tenant)
                if then is None:
                    continue
                delta = max(0.0, now.served - then.served)  # a reset must not count as negative
                served[tenant] = served.get(tenant, 0.0) + delta
                if then.backlogged:
                    waited_s[tenant] = waited_s.get(tenant, 0.0) + (t1 - t0)
                    served_waiting[tenant] = served_waiting.get(tenant, 0.0) + delta
        if not samples:
            return FairnessFigures(None, 0)
        latest = samples[-1][1]
        weights = {t: s.weight for t, s in latest.items()}
        rates = [
            served_waiting.get(tenant, 0.0) / (weights[tenant] * seconds)
            for tenant, seconds in sorted(waited_s.items())
            if seconds > 0 and weights.get(tenant, 0.0) > 0
        ]
        active = sorted(t for t in latest if served.get(t, 0.0) > 0 or t in waited_s)
        total_served = sum(served.get(t, 0.0) for t in active)
        total_weight = sum(weights[t] for t in active)
        service_share = (
            {t: served.get(t, 0.0) / total_served for t in active} if total_served > 0 else {}
        )
        weight_share = {t: weights[t] / total_weight for t in active} if total_weight > 0 else {}
        return FairnessFigures(
            jain_index(rates),
            len(waited_s),
            MappingProxyType(service_share),
            MappingProxyType(weight_share),
        )
