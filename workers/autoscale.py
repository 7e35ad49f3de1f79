"""When the fleet should grow or shrink, from the server's queue depth (pure).

:class:`QueueDepthAutoscaler` is handed each reading of the queue (requests
waiting, all tenants), the replicas serving now, how many more Ray could
place, and ``now``; it answers one :class:`ScaleDecision`: add one replica,
remove one, or hold. It never sleeps, reads a clock or touches Ray; the
runner (:mod:`workers.scaling`) does the reading and the acting.

The rules, with ``R`` the replicas serving now:

* **grow** when ``queued > up_queued_per_replica * R`` on every reading for
  ``up_after_s`` (and ``R < max_replicas`` and Ray has room for one more);
* **shrink** when ``queued <= down_queued_per_replica * R`` on every reading
  for ``down_after_s`` (and ``R > min_replicas``);
* one replica per decision, and none within ``cooldown_s`` of the last one.

Hysteresis: the two thresholds must leave a gap (``down < up``), so a
queue between them holds the fleet as it is; a change resets both streaks
(they described the fleet before it), so the next change needs a whole
``up_after_s`` or ``down_after_s`` of readings of the new fleet. A reading
that failed (None) breaks both streaks: the fleet is never resized on
stale figures. Outside ``[min_replicas, max_replicas]`` (an actor lost, a
replica count from elsewhere) the fleet is brought back one step per
decision, without waiting for a streak but after the cooldown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

from workers.errors import WorkerConfigError

__all__ = [
    "AutoscaleConfig",
    "AutoscaleStats",
    "QueueDepthAutoscaler",
    "ScaleAction",
    "ScaleDecision",
]

ScaleAction: TypeAlias = Literal["add", "remove", "hold"]


@dataclass(frozen=True, slots=True)
class AutoscaleConfig:
    """The bounds, thresholds (queued requests per serving replica) and times (s)."""

    min_replicas: int
    max_replicas: int
    up_queued_per_replica: float = 4.0
    down_queued_per_replica: float = 0.0
    up_after_s: float = 10.0
    down_after_s: float = 60.0
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.min_replicas < 1:
            raise WorkerConfigError(f"min_replicas is {self.min_replicas}; it must be >= 1")
        if self.max_replicas < self.min_replicas:
            raise WorkerConfigError(
                f"max_replicas is {self.max_replicas}; it must be >= min_replicas "
                f"({self.min_replicas})"
            )
        if not self.down_queued_per_replica >= 0:
            raise WorkerConfigError(
                f"down_queued_per_replica is {self.down_queued_per_replica}; it must be >= 0"
            )
        if not self.up_queued_per_replica > self.down_queued_per_replica:
            raise WorkerConfigError(
                f"up_queued_per_replica is {self.up_queued_per_replica}; it must be above "
                f"down_queued_per_replica ({self.down_queued_per_replica}), or the fleet flaps"
            )
        for name in ("up_after_s", "down_after_s", "cooldown_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise WorkerConfigError(f"{name} is {value}; it must be a number >= 0")


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """``action`` and the replicas the fleet should have after it; ``reason`` in words."""

    action: ScaleAction
    replicas: int
    reason: str


@dataclass(frozen=True, slots=True)
class AutoscaleStats:
    added: int
    removed: int
    readings: int
    failed_readings: int
    last_queued: float | None
    last_reason: str


class QueueDepthAutoscaler:
    """See the module docstring."""

    def __init__(self, config: AutoscaleConfig) -> None:
        self.config = config
        self._high_since: float | None = None
        self._low_since: float | None = None
        self._changed_at: float | None = None
        self._added = 0
        self._removed = 0
        self._readings = 0
        self._failed = 0
        self._last_queued: float | None = None
        self._last_reason = "no reading yet"

    def observe(
        self, now: float, queued: float | None, replicas: int, headroom: int | None = None
    ) -> ScaleDecision:
        """One reading: ``queued`` requests waiting (None: the reading failed),
        ``replicas`` serving (draining ones not counted), ``headroom`` more
        replicas Ray can place now (None: no limit)."""
        decision = self._decide(now, queued, replicas, headroom)
        if decision.action == "add":
            self._added += 1
        elif decision.action == "remove":
            self._removed += 1
        if decision.action != "hold":
            self._changed_at = now
            self._high_since = self._low_since = None
        self._last_reason = decision.reason
        return decision

    def _decide(
        self, now: float, queued: float | None, replicas: int, headroom: int | None
    ) -> ScaleDecision:
        config = self.config
        self._last_queued = queued
        if queued is None:
            self._failed += 1
            self._high_since = self._low_since = None
            return ScaleDecision("hold", replicas, "the queue depth is unknown")
        self._readings += 1
        high = queued > config.up_queued_per_replica * replicas
        low = queued <= config.down_queued_per_replica * replicas
        self._high_since = (
            (self._high_since if self._high_since is not None else now) if high else None
        )
        self._low_since = (self._low_since if self._low_since is not None else now) if low else None
        no_room = headroom is not None and headroom < 1

        if self._changed_at is not None and now - self._changed_at < config.cooldown_s:
            left = config.cooldown_s - (now - self._changed_at)
            return ScaleDecision("hold", replicas, f"cooling down ({left:.1f} s left)")
        if replicas < config.min_replicas:
            if no_room:
                return ScaleDecision("hold", replicas, "below min_replicas, but Ray has no room")
            return ScaleDecision("add", replicas + 1, f"below min_replicas ({config.min_replicas})")
        if replicas > config.max_replicas:
            return ScaleDecision(
                "remove", replicas - 1, f"above max_replicas ({config.max_replicas})"
            )
        if self._high_since is not None and now - self._high_since >= config.up_after_s:
            above = f"queued {queued:g} > {config.up_queued_per_replica:g} x {replicas}"
            if replicas >= config.max_replicas:
                return ScaleDecision("hold", replicas, f"{above}, at max_replicas")
            if no_room:
                return ScaleDecision("hold", replicas, f"{above}, but Ray has no room for one more")
            held = now - self._high_since
            return ScaleDecision("add", replicas + 1, f"{above} for {held:.1f} s")
        if self._low_since is not None and now - self._low_since >= config.down_after_s:
            if replicas <= config.min_replicas:
                return ScaleDecision("hold", replicas, "the queue is low, at min_replicas")
            held = now - self._low_since
            return ScaleDecision(
                "remove",
                replicas - 1,
                f"queued {queued:g} <= {config.down_queued_per_replica:g} x {replicas} "
                f"for {held:.1f} s",
            )
        return ScaleDecision("hold", replicas, f"queued {queued:g} with {replicas} replicas")

    def stats(self) -> AutoscaleStats:
        return AutoscaleStats(
            added=self._added,
            removed=self._removed,
            readings=self._readings,
            failed_readings=self._failed,
            last_queued=self._last_queued,
            last_reason=self._last_reason,
        )


def _since(start: float | None, now: float) -> float:
    """When a streak began: ``start``, or ``now`` for a new one."""
    return now if start is None else start
