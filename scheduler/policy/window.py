"""Per-worker adaptive window: additive increase, multiplicative decrease (AIMD).

The window is how many requests a worker may hold; workers pull, so it is
their pull rate.

- Decrease: any saturation signal (time to first token or time per output
  token above target, engine queue deeper than allowed, KV cache or GPU
  memory above their limit) multiplies the window by ``decrease``.
- Increase: by ``increase``, only when saturation is *low*: the worker
  filled its window (growth without use would be a guess), its engine
  queue, KV cache and GPU memory are below ``near_target`` of their limits,
  and it is not both busy (GPU utilisation >= ``high_gpu_util``) and near
  its latency targets — there more batch buys latency, not throughput.
- Otherwise the window holds. High utilisation with latency under target is
  the goal and never shrinks a window by itself. The hold band below each
  limit is what lets the window settle just past the engine's batch size
  instead of sawing between "too big" and a cut.

One overload must cut the window once, not once per report. Reports lag:
requests dispatched under the old, bigger window keep reporting inflated
latency, and the engine keeps its queue, until they drain. So after a cut
the window is *recovering* and will not cut again until a request
dispatched after the cut reports its first token (or completes): only that
request's experience says whether the smaller window is still too big.
Without this, a few lagging reports in a row collapse the window to its
minimum and throughput with it. Changes are also at most one per
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


def _near_limits(feedback: WorkerFeedback, config: WindowConfig) -> bool:
    """Close enough to a limit that growing would likely overshoot it."""
    near = config.near_target
    if (
        (feedback.queue_depth is not None and feedback.queue_depth >= near * config.max_queue_depth)
        or (feedback.kv_usage is not None and feedback.kv_usage >= near * config.max_kv_usage)
        or (feedback.gpu_mem is not None and feedback.gpu_mem >= near * config.max_gpu_mem)
    ):
        return True
    if feedback.gpu_util is None or feedback.gpu_util < config.high_gpu_util:
        return False
    return (feedback.ttft_s is not None and feedback.ttft_s >= near * config.target_ttft_s) or (
        feedback.tpot_s is not None and feedback.tpot_s >= near * config.target_tpot_s
    )


class AimdWindow:
    """The window of one worker. ``limit`` is what dispatch honours."""

    __slots__ = (
        "config",
        "decreases",
        "increases",
        "last_change_s",
        "limit",
        "recovery_mark",
        "value",
    )

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.value = float(config.initial)
        self.limit = config.initial
        self.increases = 0
        self.decreases = 0
        self.last_change_s = -math.inf
        # After a cut: the worker's dispatch count at the cut. None: not recovering.
        self.recovery_mark: int | None = None

    def _set(self, value: float, now: float) -> None:
        config = self.config
        self.value = min(float(config.maximum), max(float(config.minimum), value))
        self.limit = int(self.value)
        self.last_change_s = now

    def observe(
        self, feedback: WorkerFeedback, in_flight: int, dispatched: int, now: float
    ) -> bool:
        """Apply one report; ``dispatched`` counts the worker's dispatches so far.

        True when the limit changed.
        """
        config = self.config
        if now - self.last_change_s < config.adjust_interval_s:
            return False
        before = self.limit
        if is_saturated(feedback, config):
            if self.recovery_mark is None and self.value > config.minimum:
                self._set(self.value * config.decrease, now)
                self.decreases += 1
                self.recovery_mark = dispatched
        elif (
            in_flight >= self.limit
            and self.value < config.maximum
            and not _near_limits(feedback, config)
        ):
            self._set(self.value + config.increase, now)
            self.increases += 1
        return self.limit != before

    def heard_from(self, dispatch_index: int) -> None:
        """A request that was this worker's ``dispatch_index``-th dispatch reported
        (first token or completion); one started after the last cut ends recovery."""
        mark = self.recovery_mark
        if mark is not None and dispatch_index > mark:
            self.recovery_mark = None

    def reconfigure(self, config: WindowConfig) -> None:
        """Hot reload: keep the learned value, within the new bounds."""
        self.config = config
        self.value = min(float(config.maximum), max(float(config.minimum), self.value))
        self.limit = int(self.value)
