"""The discrete-event loop: a trace, a policy and a fleet model on a virtual clock.

The policy is the very object the server runs (``create_policy``); the loop
plays the runtime's part. At each moment, in this order: workers report
what their iterations finished (first tokens, completions), requests that
arrive now are submitted, workers send feedback when their report is due,
then the loop settles: deadlines expire, the policy fills free windows, and
any preemptions it asks for are carried out (the stopped request goes back
to the policy with the output it made), until nothing more happens at this
instant. The clock then jumps to the next arrival, iteration end or
feedback tick. The run ends when every request has left.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.clock import VirtualClock
from scheduler.policy import Policy, create_policy
from scheduler.sim.errors import SimulationStalledError
from scheduler.sim.events import EventRow
from scheduler.sim.fleet import FleetConfig, SeqEvent, Worker
from scheduler.sim.summary import Recorder, summarize
from scheduler.sim.traces import TraceRow
from scheduler.types import Admitted, Dispatch, PolicyStats, Request, SchedulerConfig

__all__ = ["SimOptions", "SimResult", "Simulation", "simulate"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class SimOptions:
    """How trace rows become requests (``simulation:`` in the config)."""

    # None: the policy is told each request's real output length; otherwise
    # it sees this estimate, as a server that cannot know the length would.
    output_estimate_tokens: int | None = None
    deadline_s: float | None = None  # relative to arrival


@dataclass(frozen=True, slots=True)
class SimResult:
    rows: tuple[EventRow, ...]
    summary: dict[str, Any]
    stats: PolicyStats


@dataclass(slots=True)
class _Track:
    """A request's row while it is in flight."""

    trace: TraceRow
    request_id: str
    admitted: bool = False
    reason: str = ""
    dispatch_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    worker: str = ""
    preemptions: int = 0
    done_output: int = 0  # output made before the last preemption
    served_input: int = 0  # prompt tokens served before the last preemption
    charged: float = 0.0  # dispatched service booked for it (summary)


class Simulation:
    """One run. ``run()`` once; the policy may be built by the caller (tests)."""

    def __init__(
        self,
        trace: Sequence[TraceRow],
        config: SchedulerConfig,
        fleet: FleetConfig,
        *,
        policy: Policy | None = None,
        policy_name: str = "tidegate",
        seed: int = 0,
        options: SimOptions | None = None,
    ) -> None:
        self.trace = trace
        self.config = config
        self.fleet = fleet
        self.seed = seed
        self.options = options or SimOptions()
        self.policy = policy or create_policy(policy_name, config, random.Random(seed))
        self.policy_name = self.policy.name if policy is not None else policy_name
        self.clock = VirtualClock(0.0)
        self.recorder = Recorder(config.input_token_weight, config.output_token_weight)
        self.workers = [Worker(f"w{i}", fleet.model, self.recorder) for i in range(fleet.workers)]
        self._by_id = {w.worker_id: w for w in self.workers}
        self._tracks: dict[str, _Track] = {}
        self._order: list[_Track] = []
        self._next_tick: float | None = None

    # ------------------------------------------------------------ the loop

    def run(self) -> SimResult:
        policy = self.policy
        for worker in self.workers:
            policy.add_worker(worker.worker_id, 0.0)
        trace = self.trace
        width = len(str(len(trace)))
        index = 0
        while True:
            candidates = [w.next_event_s() for w in self.workers]
            upcoming = [t for t in candidates if t is not None]
            if index < len(trace):
                upcoming.append(trace[index].arrival_s)
            if not upcoming:
                if policy.queued() or policy.in_flight():
                    raise SimulationStalledError(
                        f"at t={self.clock.now():.3f}s {policy.queued()} requests are queued and "
                        f"{policy.in_flight()} in flight, but no worker has work: the policy "
                        f"{self.policy_name!r} stopped dispatching"
                    )
                break
            if self._next_tick is not None:
                upcoming.append(self._next_tick)
            now = max(self.clock.now(), min(upcoming))
            self.clock.jump(now)
            self._collect(now)
            while index < len(trace) and trace[index].arrival_s <= now + _EPS:
                self._arrive(trace[index], f"r{index + 1:0{width}d}", now)
                index += 1
            if self._next_tick is not None and self._next_tick <= now + _EPS:
                for worker in self.workers:
                    policy.feedback(worker.worker_id, worker.feedback(now), now)
                self._next_tick = None
            self._settle(now)
            if self._next_tick is None and any(w.busy for w in self.workers):
                self._next_tick = now + self.fleet.feedback_interval_s
        rows = tuple(self._row(t) for t in self._order)
        weights = {name: t.weight for name, t in self.config.tenants.items()}
        summary = summarize(
            rows,
            self.recorder,
            weights,
            workers=len(self.workers),
            policy=self.policy_name,
            seed=self.seed,
        )
        return SimResult(rows, summary, policy.stats())

    # ------------------------------------------------------------ steps

    def _arrive(self, row: TraceRow, request_id: str, now: float) -> None:
        track = _Track(row, request_id)
        self._tracks[request_id] = track
        self._order.append(track)
        estimate = self.options.output_estimate_tokens
        deadline = self.options.deadline_s
        request = Request(
            request_id=request_id,
            tenant=row.tenant,
            priority=row.priority,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens if estimate is None else estimate,
            arrival_s=row.arrival_s,
            deadline_s=None if deadline is None else row.arrival_s + deadline,
            session=row.session,
        )
        outcome = self.policy.submit(request, now)
        if isinstance(outcome, Admitted):
            track.admitted = True
            self.recorder.queued(row.tenant, +1, now)
        else:
            track.reason = outcome.reason

    def _collect(self, now: float) -> None:
        for worker in self.workers:
            due = worker.next_event_s()
            if worker.has_events or (due is not None and due <= now + _EPS):
                for event in worker.advance(now):
                    self._on_event(worker, event, now)

    def _on_event(self, worker: Worker, event: SeqEvent, now: float) -> None:
        track = self._tracks[event.request_id]
        if event.kind == "first_token":
            if track.first_token_s is None:
                track.first_token_s = event.at_s
            self.policy.first_token(event.request_id, now)
            return
        track.finish_s = event.at_s
        row = track.trace
        self.policy.complete(event.request_id, row.input_tokens, event.output_tokens, now)
        # Book the difference between what was charged and the real cost.
        real = self.recorder.cost(row.input_tokens, event.output_tokens)
        self.recorder.charge(row.tenant, real - track.charged, now)
        track.charged = real

    def _settle(self, now: float) -> None:
        policy = self.policy
        while True:
            for dropped in policy.expire(now):
                track = self._tracks[dropped.request.request_id]
                track.reason = dropped.reason
                self.recorder.queued(track.trace.tenant, -1, now)
            dispatches = policy.dispatch(now)
            for decision in dispatches:
                self._start(decision, now)
            preempts = policy.preemptions(now)
            for preempt in preempts:
                self._stop(preempt.request_id, preempt.worker_id, now)
            self._collect(now)
            if not dispatches and not preempts:
                # expire() may hold requests dropped at dispatch; one more pass
                # after a quiet round catches them without looping forever.
                for dropped in policy.expire(now):
                    track = self._tracks[dropped.request.request_id]
                    track.reason = dropped.reason
                    self.recorder.queued(track.trace.tenant, -1, now)
                return

    def _start(self, decision: Dispatch, now: float) -> None:
        rid = decision.request.request_id
        track = self._tracks[rid]
        row = track.trace
        if track.dispatch_s is None:
            track.dispatch_s = now
        track.worker = decision.worker_id
        self.recorder.queued(row.tenant, -1, now)
        done = max(decision.done_output_tokens, track.done_output)
        remaining_cost = self.recorder.cost(
            row.input_tokens - track.served_input, row.output_tokens - done
        )
        self.recorder.charge(row.tenant, remaining_cost, now)
        track.charged += remaining_cost
        self._by_id[decision.worker_id].add(
            rid,
            row.tenant,
            row.input_tokens,
            row.output_tokens,
            now,
            done_output_tokens=done,
            served_input_tokens=track.served_input,
        )

    def _stop(self, request_id: str, worker_id: str, now: float) -> None:
        track = self._tracks[request_id]
        worker = self._by_id[worker_id]
        self._collect(now)  # it may have finished at this very instant
        if track.finish_s is not None:
            return
        made, served_input = worker.preempt(request_id, now)
        track.preemptions += 1
        track.done_output = made
        track.served_input = served_input
        row = track.trace
        # Refund the booked cost of the work not done.
        done_cost = self.recorder.cost(served_input, made)
        self.recorder.charge(row.tenant, done_cost - track.charged, now)
        track.charged = done_cost
        self.policy.preempted(request_id, made, now, input_processed=served_input)
        self.recorder.queued(row.tenant, +1, now)

    def _row(self, track: _Track) -> EventRow:
        row = track.trace
        return EventRow(
            request_id=track.request_id,
            tenant=row.tenant,
            priority=row.priority,
            arrival_s=row.arrival_s,
            admitted=track.admitted,
            reject_reason=track.reason,
            dispatch_s=track.dispatch_s,
            first_token_s=track.first_token_s,
            finish_s=track.finish_s,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            worker=track.worker,
            preemptions=track.preemptions,
        )


def simulate(
    trace: Sequence[TraceRow],
    config: SchedulerConfig,
    fleet: FleetConfig,
    *,
    policy_name: str = "tidegate",
    seed: int = 0,
    options: SimOptions | None = None,
) -> SimResult:
    """Run ``trace`` through the named policy on the fleet model."""
    return Simulation(
        trace, config, fleet, policy_name=policy_name, seed=seed, options=options
    ).run()
