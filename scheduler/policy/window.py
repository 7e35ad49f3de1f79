"""Per-worker adaptive window: additive increase, decrease on saturation.

The window is how many requests a worker may hold; workers pull, so it is
their pull rate.

- Increase: by ``increase``, only when saturation is *low*: the worker
  filled its window (growth without use would be a guess), its engine has
  no queue of its own, its KV cache and GPU memory are below
  ``near_target`` of their limits, and it is not both busy (GPU utilisation
  >= ``high_gpu_util``) and near its latency targets — there more batch
  buys latency, not throughput. A worker still draining down to a cut
  counts as filling its window: good reports while it holds more than the
  window say the cut went deeper than needed (a passing burst of long
  prompts, say), and growing back at once is what keeps throughput.

  The engine queue is the delay signal of TCP Vegas: a request waiting in
  the engine means the window already covers everything the engine can
  run, plus one ready for the next free slot. Growing further adds only
  queueing, and the first-token time that reveals it arrives a queue wait
  later, by which time a window grown once per report has overshot by
  several requests and must be cut. So the window grows while the engine
  queue is empty, holds while it is between 1 and ``max_queue_depth``, and
  is cut above that.
  Slow start, as in TCP: a fresh window (``initial``) would take hundreds
  of reports to reach a big engine's batch one request at a time, so until
  its first cut, or the first report that holds it near a limit, a good
  report doubles it instead. Either signal says the window is near what the
  worker can take; from then on growth is additive.
- Decrease: each saturation signal proposes a new window and the smallest
  proposal wins. The base of a cut is what the worker really holds,
  ``min(window, in_flight)``: a cut of a window the worker does not use
  would change nothing. (A report can find in-flight far below the load
  that caused it, so the base never drops below one ``decrease`` step of
  the window.)

  * Time per output token above target, KV cache or GPU memory above their
    limit: the batch itself is too big. Multiplicative: ``base x decrease``.
  * The engine queues (``queue_depth`` above ``max_queue_depth``), or time
    to first token is above target while the engine has a queue: the worker
    holds more than its engine runs. Those extra requests buy no
    throughput; they only wait inside the engine, in its order rather than
    the scheduler's, and inflate the first-token time. So the proposal is
    what the engine is running, ``in_flight - queue_depth`` — a delay-based
    (Vegas-like) target, not a blind multiplicative cut, which would shrink
    a full batch along with the queue. One step never cuts further than a
    multiplicative one, so a transient queue cannot collapse the window.
    If first tokens stay late once the queue is gone, the next report cuts
    multiplicatively.
  * Time to first token above target with no engine queue: multiplicative.
- Otherwise the window holds. High utilisation with latency under target is
  the goal and never shrinks a window by itself. The hold band below each
  limit is what lets the window settle just past the engine's batch size
  instead of sawing between "too big" and a cut.

A cut below what the worker holds does not stop its dispatches: the
reduction is paced (``drain.py``), so the workers of a fleet that all cut
at the same report keep serving the queue while they shrink.

One overload must cut the window once, not once per report. Reports lag:
requests dispatched under the old, bigger window keep reporting inflated
latency, and the engine keeps its queue, until they drain. So after a cut
the window is *recovering* and will not cut again until a request
dispatched after the worker got back inside the new window reports its
first token (or completes): only that request's experience says whether
the smaller window is still too big. Without this, a few lagging reports in
a row collapse the window to its minimum and throughput with it. Changes
are also at most one per ``adjust_interval_s``.
"""

from __future__ import annotations

import math

from scheduler.policy.drain import Drain
from scheduler.types import WindowConfig, WorkerFeedback

__all__ = ["AimdWindow", "cut_target"]


def cut_target(
    feedback: WorkerFeedback, config: WindowConfig, value: float, in_flight: int
) -> float | None:
    """The window the saturation signals in ``feedback`` call for (before the
    bounds); None when nothing is saturated (unknown signals count as fine).
    See the module docstring."""
    decrease = config.decrease
    base = min(value, max(float(in_flight), value * decrease))
    multiplicative = base * decrease
    proposals: list[float] = []
    queue = feedback.queue_depth
    if queue is not None and queue > 0:
        # What the engine runs; never a deeper cut than a multiplicative step.
        running = max(float(in_flight - queue), multiplicative)
        if queue > config.max_queue_depth:
            proposals.append(running)
    else:
        running = multiplicative
    if feedback.ttft_s is not None and feedback.ttft_s > config.target_ttft_s:
        proposals.append(running)
    if (
        (feedback.tpot_s is not None and feedback.tpot_s > config.target_tpot_s)
        or (feedback.kv_usage is not None and feedback.kv_usage > config.max_kv_usage)
        or (feedback.gpu_mem is not None and feedback.gpu_mem > config.max_gpu_mem)
    ):
        proposals.append(multiplicative)
    return min(proposals) if proposals else None


def _near_limits(feedback: WorkerFeedback, config: WindowConfig) -> bool:
    """Close enough to a limit that growing would likely overshoot it (for the
    engine queue: any queue at all, see the module docstring)."""
    near = config.near_target
    if (
        (feedback.queue_depth is not None and feedback.queue_depth > 0)
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
    """The window of one worker. ``limit`` is the window; :meth:`room` is what
    dispatch may still send, the paced reduction included."""

    __slots__ = (
        "config",
        "decreases",
        "drain",
        "increases",
        "last_change_s",
        "limit",
        "recovery_mark",
        "slow_start",
        "value",
    )

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self.value = float(config.initial)
        self.limit = config.initial
        self.increases = 0
        self.decreases = 0
        self.last_change_s = -math.inf
        # After a cut: the dispatch count after which a report ends the
        # recovery (moved on by dispatches made while draining). None: not recovering.
        self.recovery_mark: int | None = None
        self.drain = Drain()
        self.slow_start = config.slow_start  # doubling until the first cut or hold

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
        drain = self.drain
        if drain.active and in_flight <= self.limit:
            drain.end()
        before = self.limit
        target = cut_target(feedback, config, self.value, in_flight)
        if target is not None:
            self.slow_start = False
            if self.recovery_mark is None and self.value > config.minimum and target < self.value:
                self._set(target, now)
                self.decreases += 1
                self.recovery_mark = dispatched
                drain.begin(in_flight, self.limit)
        elif in_flight >= self.limit and self.value < config.maximum:
            if _near_limits(feedback, config):
                self.slow_start = False
            else:
                step = self.value if self.slow_start else config.increase
                self._set(self.value + step, now)
                self.increases += 1
        return self.limit != before

    def room(self, running: int) -> int:
        """How many more requests a worker holding ``running`` may take now:
        the free window, or while it drains down to a cut, the slots earned."""
        free = self.limit - running
        if free >= 0 or not self.drain.active:
            return free
        return max(free, self.drain.earned(self.limit))

    def took(self, running_before: int, dispatch_index: int, *, earned: bool = True) -> None:
        """The worker took its ``dispatch_index``-th request while holding
        ``running_before``. ``earned`` False: the slot was not the window's
        (a swap for a preempted request, see ``WorkerState``)."""
        drain = self.drain
        if not drain.active:
            return
        if running_before < self.limit:
            drain.end()
            return
        if earned:
            drain.taken += 1
        # Started while the worker still holds more than its window: its
        # experience says nothing about the new window yet.
        if self.recovery_mark is not None:
            self.recovery_mark = dispatch_index

    def released(self, running: int) -> None:
        """A request left the worker, which now holds ``running``."""
        drain = self.drain
        if not drain.active:
            return
        if running <= self.limit:
            drain.end()
        else:
            drain.released += 1

    def heard_from(self, dispatch_index: int) -> None:
        """A request that was this worker's ``dispatch_index``-th dispatch reported
        (first token or completion); one started after the recovery mark ends it."""
        mark = self.recovery_mark
        if mark is not None and dispatch_index > mark:
            self.recovery_mark = None

    def reconfigure(self, config: WindowConfig, in_flight: int = 0) -> None:
        """Hot reload: keep the learned value, within the new bounds; a worker
        now over its window drains to it at the paced rate."""
        self.config = config
        self.value = min(float(config.maximum), max(float(config.minimum), self.value))
        self.limit = int(self.value)
        self.drain.begin(in_flight, self.limit)
