"""Properties of a worker's window as dispatch sees it, over random reports.

One worker, a backlog of two bands, and random completions, saturation
reports and top-band arrivals (which preempt). Checked after every step:

- a cut never makes the worker hold *more*: dispatch fills it up to its
  window, or while it drains down to a cut, never above what it held at
  the cut (a swap for a preempted request replaces it one for one);
- a cut never stalls the worker: while it drains with work queued, fewer
  than ``in-flight at the cut / min(window, in-flight at the cut / 2)``
  completions pass between two dispatches (a dispatch at every second one
  for a cut to half or more), where a blocking reduction would dispatch
  nothing until the whole excess has drained.
"""

from __future__ import annotations

import math
import random
from types import MappingProxyType

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from scheduler.policy import create_policy
from scheduler.types import (
    Admitted,
    Request,
    SchedulerConfig,
    TenantConfig,
    WindowConfig,
    WorkerFeedback,
)

WINDOW = WindowConfig(initial=6, minimum=1, maximum=12, decrease=0.5, adjust_interval_s=0.0)

reports = st.builds(
    WorkerFeedback,
    ttft_s=st.none() | st.floats(0.0, 3.0),
    tpot_s=st.none() | st.floats(0.0, 0.2),
    queue_depth=st.none() | st.integers(0, 8),
    gpu_util=st.none() | st.floats(0.0, 1.0),
)


class WindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        tenants = {n: TenantConfig(n, max_priority=2, max_queued=10_000) for n in ("bulk", "top")}
        config = SchedulerConfig(tenants=MappingProxyType(tenants), window=WINDOW)
        self.policy = create_policy("tidegate", config, random.Random(0))
        self.policy.add_worker("w", 0.0)
        self.now = 0.0
        self.next_id = 0
        self.running: list[str] = []  # dispatch order
        self.cap = WINDOW.initial  # most the worker may hold now
        self.start = 0  # in-flight at the last cut that left it over its window
        self.cut_limit = 0
        self.silent = 0  # completions since the last dispatch, while draining

    def _submit(self, tenant: str, priority: int) -> None:
        rid = f"r{self.next_id}"
        self.next_id += 1
        outcome = self.policy.submit(Request(rid, tenant, priority, 100, 50), self.now)
        assert isinstance(outcome, Admitted)

    def _window(self) -> tuple[int, int]:
        stats = self.policy.stats().workers["w"]
        return stats.window, stats.in_flight

    def _fill(self) -> None:
        got = self.policy.dispatch(self.now)
        self.running += [d.request.request_id for d in got]
        limit, in_flight = self._window()
        assert in_flight <= max(self.cap, limit), "dispatch went past the window and the cut"
        if got:
            self.silent = 0
        if in_flight <= limit:
            self.cap = limit
            self.start = 0
        for order in self.policy.preemptions(self.now):
            self.policy.preempted(order.request_id, 0, self.now)
            self.running.remove(order.request_id)
            swapped = self.policy.dispatch(self.now)
            assert len(swapped) <= 1
            self.running += [d.request.request_id for d in swapped]
            assert self._window()[1] <= max(self.cap, self._window()[0])

    @initialize()
    def backlog(self) -> None:
        for _ in range(40):
            self._submit("bulk", 0)
        self._fill()

    @rule(count=st.integers(1, 3), data=st.data())
    def complete(self, count: int, data: st.DataObject) -> None:
        for _ in range(min(count, len(self.running))):
            rid = data.draw(st.sampled_from(self.running))
            self.running.remove(rid)
            self.policy.complete(rid, 100, 50, self.now)
            if self.start:
                self.silent += 1
            self._fill()
            self._submit("bulk", 0)

    @rule(report=reports)
    def feedback(self, report: WorkerFeedback) -> None:
        self.now += 0.5
        before, in_flight = self._window()
        self.policy.feedback("w", report, self.now)
        limit, _ = self._window()
        if limit != before:
            self.cap = max(limit, in_flight)
            if limit < before and in_flight > limit:
                self.start, self.cut_limit, self.silent = in_flight, limit, 0
        self._fill()

    @rule()
    def latest_reports_first_token(self) -> None:
        """Ends a recovery if the latest request started inside the window."""
        if self.running:
            self.policy.first_token(self.running[-1], self.now)

    @rule()
    def top_band_arrives(self) -> None:
        self._submit("top", 2)
        self._fill()

    @invariant()
    def never_stalls_while_draining(self) -> None:
        if not self.start or not self.policy.queued():
            return
        # Slots come at ceil(k x pace / start) for the k-th completion: the gap
        # between two is under ceil(start / pace) completions.
        pace = min(self.cut_limit, self.start / 2)
        assert self.silent < math.ceil(self.start / pace), "a draining worker went silent"


WindowMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
TestWindow = WindowMachine.TestCase
