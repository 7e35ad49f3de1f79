"""Token buckets and a decaying rate estimate, both driven by a ``now`` argument.

Neither reads a clock: the caller passes the time, so a test steps through
seconds with plain floats and the simulator runs them on its virtual clock.
"""

from __future__ import annotations

import math

__all__ = ["RateEstimator", "TokenBucket"]

# Float refills leave crumbs like 0.9999999999; a wait shorter than this is no wait.
_EPSILON = 1e-9


class TokenBucket:
    """A bucket of ``rate`` units per second holding at most ``depth`` units.

    A request larger than the whole bucket would never fit, so it is let
    through once the bucket is full and leaves the level negative: the
    long-run rate still holds, the big request just pays back afterwards.
    """

    __slots__ = ("depth", "level", "rate", "updated")

    def __init__(self, rate: float, burst_s: float, now: float) -> None:
        self.rate = rate
        self.depth = rate * burst_s
        self.level = self.depth  # a new tenant starts with its full burst
        self.updated = now

    def _refill(self, now: float) -> None:
        # A clock that steps back (two callers, two clocks) must not mint tokens.
        if now > self.updated:
            self.level = min(self.depth, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_s(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` could be taken; 0.0 when it can be taken now."""
        self._refill(now)
        need = min(amount, self.depth)
        short = need - self.level
        if short <= _EPSILON:
            return 0.0
        return short / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level -= amount

    def resized(self, rate: float, burst_s: float, now: float) -> TokenBucket:
        """The same bucket under a new rate/burst, keeping how full it was (hot reload)."""
        self._refill(now)
        fresh = TokenBucket(rate, burst_s, now)
        fraction = self.level / self.depth if self.depth > 0 else 1.0
        fresh.level = fraction * fresh.depth
        return fresh


class RateEstimator:
    """Events per second, exponentially decayed with time constant ``tau_s``.

    Used only to turn a queue-cap refusal into a retry-after estimate, so
    a smooth, cheap figure is worth more than an exact one.
    """

    __slots__ = ("tau_s", "updated", "value")

    def __init__(self, tau_s: float = 10.0) -> None:
        self.tau_s = tau_s
        self.value = 0.0
        self.updated: float | None = None

    def _decay(self, now: float) -> None:
        if self.updated is None:
            self.updated = now
        elif now > self.updated:
            self.value *= math.exp(-(now - self.updated) / self.tau_s)
            self.updated = now

    def record(self, now: float, count: float = 1.0) -> None:
        self._decay(now)
        self.value += count

    def per_s(self, now: float) -> float:
        self._decay(now)
        return self.value / self.tau_s
