"""Fairness figures from an events file alone, so a replay and a simulation compare.

``tidegate simulate`` computes its summary from what the fleet model did
inside (each prefill and decode iteration). A replay against a real server
(``tidegate loadgen``) sees only the events file. To compare like with
like, both files go through :func:`fairness_summary`, which rebuilds what
the summary needs from the rows (definitions in :mod:`scheduler.sim.summary`):

* a tenant is backlogged while one of its admitted requests is between
  arrival and first dispatch (never-dispatched ones until the end);
* a request's input tokens are served evenly between its dispatch and its
  first token, its output tokens evenly between its first token and its
  finish;
* its cost is charged at dispatch (for the dispatched-service figures).

Preemptions are not seen in the rows: a preempted request counts as one
run, which blurs the figures a little under heavy preemption.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.sim.events import EventRow
from scheduler.sim.summary import Recorder, summarize

__all__ = ["fairness_summary", "recorder_from_events"]


def recorder_from_events(
    rows: Sequence[EventRow], input_weight: float, output_weight: float
) -> Recorder:
    """A summary recorder filled from the rows (see the module docstring)."""
    recorder = Recorder(input_weight, output_weight)
    # (time, order, tenant, delta or charge): at one instant arrivals come
    # first, then dispatches (a dequeue, then its charge), as in the simulator.
    moves: list[tuple[float, int, str, float]] = []
    for row in rows:
        if not row.admitted:
            continue
        moves.append((row.arrival_s, 0, row.tenant, 1))
        start = row.dispatch_s
        if start is None:
            continue
        moves.append((start, 1, row.tenant, -1))
        moves.append((start, 2, row.tenant, recorder.cost(row.input_tokens, row.output_tokens)))
        first = row.first_token_s
        end = row.finish_s
        if first is not None and first >= start:
            recorder.service(row.tenant, start, first, row.input_tokens, 0)
            if end is not None and end >= first:
                recorder.service(row.tenant, first, end, 0, row.output_tokens)
    for at, kind, tenant, value in sorted(moves):
        if kind == 2:
            recorder.charge(tenant, value, at)
        else:
            recorder.queued(tenant, int(value), at)
    return recorder


def fairness_summary(
    rows: Sequence[EventRow],
    weights: Mapping[str, float],
    *,
    workers: int,
    input_weight: float = 1.0,
    output_weight: float = 2.0,
    label: str = "events",
) -> dict[str, Any]:
    """The simulator's summary object, computed from the rows alone."""
    recorder = recorder_from_events(rows, input_weight, output_weight)
    return summarize(rows, recorder, weights, workers=workers, policy=label, seed=0)
