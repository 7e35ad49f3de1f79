"""Per-worker adaptive window: additive increase, multiplicative decrease (AIMD).

The window is how many requests a worker may hold; workers pull, so it is
their pull rate. Saturation (any of: time to first token or time per
output token above target, engine queue deeper than allowed, KV cache or
GPU memory above their limit) shrinks it by ``decrease``. Otherwise it grows
by ``increase``, but only when the worker actually filled its window —
growth without use would be a guess — and not when GPU utilisation is high
*and* latency is already close to target: there more batch buys latency,
not throughput, so the window holds. High utilisation with latency well
under target is the goal, and never shrinks a window by itself.

A burst of reports about one overload must shrink the window once, not
once per report, so the window changes at most once per
``adjust_interval_s``.
"""

from __future__ import annotations

import math

from scheduler.types import WindowConfig, WorkerFeedback

__all__ = ["AimdWindow", "is_saturated"]


def is_saturated(feedback: WorkerFeedback, config: WindowConfig) -> bool:
    """Any saturation signal present (unknown signals count as fine)."""
    return (
        (feedback.ttft_s is not None and feedback.ttft_s > config.target_ttft_s)
        or (feedback.tpot_s is not None and feedback.tpot_s > config.target_tpot_s)
        or (feedback.queue_depth is not None and feedback.queue_depth > config.max_queue_depth)
        or (feedback.kv_usage is not None and feedback.kv_usage > config.max_kv_usage)
        or (feedback.gpu_mem is not None and feedback.gpu_mem > config.max_gpu_mem)
    )


def _busy_near_target(feedback: WorkerFeedback, config: WindowConfig) -> bool:
    if feedback.gpu_util is None or feedback.gpu_util < config.high_gpu_util:
        return False
    near = config.near_target
    return (feedback.ttft_s is not None and feedback.ttft_s >= near * config.target_ttft_s) or (
        feedback.tpot_s is not None and feedback.tpot_s >= near * config.target_tpot_s
    )


class AimdWindow:
    """The window of one worker. ``limit`` is what dispatch honours."""

    __slots__ = ("config", "decreases", "increases", "last_change_s", "limit", "value")

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.value = float(config.initial)
        self.limit = config.initial
        self.increases = 0
        self.decreases = 0
        self.last_change_s = -math.inf

    def _set(self, value: float, now: float) -> None:
        config = self.config
        self.value = min(float(config.maximum), max(float(config.minimum), value))
        self.limit = int(self.value)
        self.last_change_s = now

    def observe(self, feedback: WorkerFeedback, in_flight: int, now: float) -> bool:
        """Apply one report; True when the limit changed."""
        config = self.config
        if now - self.last_change_s < config.adjust_interval_s:
            return False
        before = self.limit
        if is_saturated(feedback, config):
            if self.value > config.minimum:
                self._set(self.value * config.decrease, now)
                self.decreases += 1
        elif (
            in_flight >= self.limit
            and self.value < config.maximum
            and not _busy_near_target(feedback, config)
        ):
            self._set(self.value + config.increase, now)
            self.increases += 1
        return self.limit != before

    def reconfigure(self, config: WindowConfig) -> None:
        """Hot reload: keep the learned value, within the new bounds."""
        self.config = config
        self.value = min(float(config.maximum), max(float(config.minimum), self.value))
        self.limit = int(self.value)
