"""What a simulation measured: the ``--json`` summary of ``tidegate simulate``.

Definitions (all times on the virtual clock, seconds from the trace start):

* **cost** of a request: ``input_token_weight x input + output_token_weight
  x output`` (the VTC charge); a tenant's **weight-normalised service** is
  its cost served divided by its weight.
* **backlogged**: a tenant is backlogged while at least one of its admitted
  requests is queued in the scheduler (admitted or handed back by a
  preemption, and not yet dispatched). Requests already on a worker, even
  waiting in the engine's own queue, do not count: the scheduler has
  handed them out.
* **served service** accrues as the fleet does the work: a prompt chunk over
  its prefill iteration, output tokens over the iterations that make them.
  **Dispatched service** is booked at dispatch (the request's cost, or the
  remaining output's after a preemption) and refunded at a preemption for
  the output not made: what the scheduler decided, before the fleet's lag.
* **jain_index**: the timeline is cut into epochs, maximal intervals during
  which the set of backlogged tenants stays the same. In each epoch with
  two or more backlogged tenants, Jain's index ``(sum x)^2 / (n sum x^2)`` is
  taken over those tenants' weight-normalised served service in that epoch;
  the figure is the epochs' average weighted by their duration (epochs in
  which nobody was served are left out). 1.0 is perfectly weighted-fair.
  ``jain_index_dispatched`` is the same on dispatched service.
* **max_service_gap**: over every pair of tenants and every interval
  ``[t1, t2]`` during which both stayed backlogged, the largest
  ``|S_f(t1, t2) / w_f - S_g(t1, t2) / w_g|`` of dispatched service. Many
  decisions share one instant of the virtual clock, so this one is measured
  in the order of events, not in seconds: a dispatch made just after a
  tenant's queue emptied, at the same instant, is not "while backlogged". VTC
  bounds it by twice the largest weight-normalised request cost
  (``max_request_cost``); ``service_gap_ratio`` is their quotient, so <= 2
  is within the bound. ``max_service_gap_served`` is the same on served
  service, which also carries the fleet's in-flight work (up to a full batch
  per worker), so it has no such bound.
* **busy_fraction_backlogged**: worker-seconds spent running an iteration,
  over workers x seconds during which any tenant was backlogged, counting
  only those seconds (work conservation: 1.0 means no worker idled while
  work waited). ``busy_fraction`` is the same over the whole run.
* **wait**: first dispatch minus arrival; **ttft**: first token minus arrival.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from scheduler.sim.curves import Curve, intersect, merge_intervals, overlap_s, total_s
from scheduler.sim.events import EventRow

__all__ = ["Recorder", "format_summary", "jain", "percentile", "summarize"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index of ``values``; None when all are zero."""
    square = sum(v * v for v in values)
    if not values or square <= 0:
        return None
    return sum(values) ** 2 / (len(values) * square)


class Recorder:
    """Collects, during a run, what the summary needs (a ``ServiceSink`` for the fleet)."""

    def __init__(self, input_weight: float, output_weight: float) -> None:
        self._in_w = input_weight
        self._out_w = output_weight
        self.served: defaultdict[str, list[tuple[float, float, float]]] = defaultdict(list)
        self.charges: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        self.busy_spans: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        self.backlog: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        # The same charges and backlog intervals on the axis of event order.
        self.charges_in_order: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        self.backlog_in_order: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
        self._queued: Counter[str] = Counter()
        self._since: dict[str, tuple[float, int]] = {}
        self._order = 0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return self._in_w * input_tokens + self._out_w * output_tokens

    # ServiceSink
    def service(
        self, tenant: str, start_s: float, end_s: float, input_tokens: int, output_tokens: int
    ) -> None:
        self.served[tenant].append((start_s, end_s, self.cost(input_tokens, output_tokens)))

    def busy(self, worker_id: str, start_s: float, end_s: float) -> None:
        spans = self.busy_spans[worker_id]
        if spans and spans[-1][1] >= start_s:
            spans[-1] = (spans[-1][0], max(end_s, spans[-1][1]))
        else:
            spans.append((start_s, end_s))

    # scheduler side
    def _next(self) -> int:
        self._order += 1
        return self._order

    def charge(self, tenant: str, amount: float, now: float) -> None:
        if amount:
            self.charges[tenant].append((now, amount))
            self.charges_in_order[tenant].append((self._next(), amount))

    def queued(self, tenant: str, delta: int, now: float) -> None:
        before = self._queued[tenant]
        after = before + delta
        if after < 0:
            raise AssertionError(f"tenant {tenant}: queued count went negative at {now}")
        self._queued[tenant] = after
        if before == 0 and after > 0:
            self._since[tenant] = (now, self._next())
        elif before > 0 and after == 0:
            since, since_order = self._since.pop(tenant)
            self.backlog[tenant].append((since, now))
            self.backlog_in_order[tenant].append((since_order, self._next()))

    def close(self, now: float) -> None:
        """End every open backlog interval at ``now`` (the end of the run)."""
        for tenant, (since, since_order) in list(self._since.items()):
            self.backlog[tenant].append((since, now))
            self.backlog_in_order[tenant].append((since_order, self._next()))
            del self._since[tenant]


def _epochs(
    backlog: Mapping[str, list[tuple[float, float]]],
) -> list[tuple[float, float, list[str]]]:
    """(start, end, backlogged tenants) for each epoch with two or more of them."""
    deltas: defaultdict[float, Counter[str]] = defaultdict(Counter)
    for tenant, spans in backlog.items():
        for start, end in spans:
            deltas[start][tenant] += 1
            deltas[end][tenant] -= 1
    times = sorted(deltas)
    active: Counter[str] = Counter()
    out: list[tuple[float, float, list[str]]] = []
    for t, following in itertools.pairwise(times):
        active.update(deltas[t])
        members = sorted(name for name, n in active.items() if n > 0)
        if len(members) >= 2:
            out.append((t, following, members))
    return out


def _jain_over_epochs(
    epochs: Sequence[tuple[float, float, list[str]]],
    curves: Mapping[str, Curve],
    weights: Mapping[str, float],
) -> float | None:
    total = 0.0
    weighted = 0.0
    for start, end, members in epochs:
        xs = []
        for name in members:
            curve = curves.get(name)
            served = 0.0 if curve is None else curve.at(end) - curve.at(start)
            xs.append(served / weights.get(name, 1.0))
        index = jain(xs)
        if index is None:
            continue
        total += end - start
        weighted += index * (end - start)
    return weighted / total if total > 0 else None


def _max_gap(
    backlog: Mapping[str, list[tuple[float, float]]],
    curves: Mapping[str, Curve],
    weights: Mapping[str, float],
) -> float | None:
    best: float | None = None
    empty = Curve([], [], linear=False)
    for f, g in itertools.combinations(sorted(backlog), 2):
        cf, cg = curves.get(f, empty), curves.get(g, empty)
        wf, wg = weights.get(f, 1.0), weights.get(g, 1.0)
        for start, end in intersect(backlog[f], backlog[g]):
            grid = sorted({start, end, *cf.breakpoints(start, end), *cg.breakpoints(start, end)})
            ds = [cf.at(t) / wf - cg.at(t) / wg for t in grid]
            gap = max(ds) - min(ds)
            best = gap if best is None else max(best, gap)
    return best


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def summarize(
    rows: Sequence[EventRow],
    recorder: Recorder,
    weights: Mapping[str, float],
    *,
    workers: int,
    policy: str,
    seed: int,
) -> dict[str, Any]:
    """The summary object (module docstring defines each figure)."""
    end_s = max(
        (r.finish_s for r in rows if r.finish_s is not None),
        default=max((r.arrival_s for r in rows), default=0.0),
    )
    recorder.close(end_s)
    backlog = {t: merge_intervals(s) for t, s in recorder.backlog.items()}
    backlog = {t: s for t, s in backlog.items() if s}
    served = {t: Curve.from_spans(s) for t, s in recorder.served.items()}
    charged = {t: Curve.from_steps(s) for t, s in recorder.charges.items()}
    charged_in_order = {t: Curve.from_steps(s) for t, s in recorder.charges_in_order.items()}
    backlog_in_order = {t: merge_intervals(s) for t, s in recorder.backlog_in_order.items()}
    busy = {w: merge_intervals(s) for w, s in recorder.busy_spans.items()}

    tenants: dict[str, Any] = {}
    by_tenant: defaultdict[str, list[EventRow]] = defaultdict(list)
    for row in rows:
        by_tenant[row.tenant].append(row)
    max_cost = 0.0
    for name in sorted(by_tenant):
        group = by_tenant[name]
        weight = weights.get(name, 1.0)
        done = [r for r in group if r.finish_s is not None]
        refused = Counter(r.reject_reason for r in group if not r.admitted)
        dropped = Counter(r.reject_reason for r in group if r.admitted and r.reject_reason)
        waits = [w for r in group if (w := r.wait_s) is not None]
        ttfts = [t for r in group if (t := r.ttft_s) is not None]
        for r in group:
            if r.admitted:
                max_cost = max(max_cost, recorder.cost(r.input_tokens, r.output_tokens) / weight)
        served_in = sum(r.input_tokens for r in done)
        served_out = sum(r.output_tokens for r in done)
        tenants[name] = {
            "weight": weight if name in weights else None,
            "requests": len(group),
            "admitted": sum(1 for r in group if r.admitted),
            "rejections": sum(refused.values()),
            "rejections_by_reason": dict(sorted(refused.items())),
            "dropped": sum(dropped.values()),
            "completed": len(done),
            "preemptions": sum(r.preemptions for r in group),
            "served_tokens": served_in + served_out,
            "served_input_tokens": served_in,
            "served_output_tokens": served_out,
            "served_cost": _r(recorder.cost(served_in, served_out)),
            "wait_p50_s": _r(percentile(waits, 50)),
            "wait_p99_s": _r(percentile(waits, 99)),
            "ttft_p50_s": _r(percentile(ttfts, 50)),
            "ttft_p99_s": _r(percentile(ttfts, 99)),
            "backlogged_s": _r(total_s(backlog.get(name, []))),
        }

    any_backlog = merge_intervals(s for spans in backlog.values() for s in spans)
    backlogged_s = total_s(any_backlog)
    busy_all = sum(total_s(spans) for spans in busy.values())
    busy_backlogged = sum(overlap_s(spans, any_backlog) for spans in busy.values())
    epochs = _epochs(backlog)
    gap = _max_gap(backlog_in_order, charged_in_order, weights)
    served_tokens = sum(t["served_tokens"] for t in tenants.values())
    return {
        "policy": policy,
        "seed": seed,
        "workers": workers,
        "requests": len(rows),
        "admitted": sum(1 for r in rows if r.admitted),
        "rejected": sum(1 for r in rows if not r.admitted),
        "dropped": sum(1 for r in rows if r.admitted and r.reject_reason),
        "completed": sum(1 for r in rows if r.finish_s is not None),
        "preemptions": sum(r.preemptions for r in rows),
        "duration_s": _r(end_s),
        "served_tokens": served_tokens,
        "served_tokens_per_s": _r(served_tokens / end_s if end_s > 0 else None),
        "jain_index": _r(_jain_over_epochs(epochs, served, weights)),
        "jain_index_dispatched": _r(_jain_over_epochs(epochs, charged, weights)),
        "max_service_gap": _r(gap),
        "max_service_gap_served": _r(_max_gap(backlog, served, weights)),
        "max_request_cost": _r(max_cost),
        "service_gap_ratio": _r(gap / max_cost if gap is not None and max_cost > 0 else None),
        "backlogged_s": _r(backlogged_s),
        "busy_fraction_backlogged": _r(
            busy_backlogged / (workers * backlogged_s) if backlogged_s > 0 else None
        ),
        "busy_fraction": _r(busy_all / (workers * end_s) if end_s > 0 else None),
        "tenants": tenants,
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}{unit}"
    return f"{value}{unit}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few human lines for the terminal (``--json`` prints the whole object)."""
    lines = [
        f"policy {summary['policy']} (seed {summary['seed']}), {summary['workers']} workers: "
        f"{summary['requests']} requests, {summary['completed']} completed, "
        f"{summary['rejected']} rejected, {summary['dropped']} dropped, "
        f"{summary['preemptions']} preemptions, {_fmt(summary['duration_s'], ' s')}",
        f"jain {_fmt(summary['jain_index'])}  service gap {_fmt(summary['max_service_gap'])} "
        f"({_fmt(summary['service_gap_ratio'])} x max request cost)  busy while backlogged "
        f"{_fmt(summary['busy_fraction_backlogged'])}",
        f"{'tenant':<16}{'weight':>7}{'served tok':>12}{'wait p50':>10}{'wait p99':>10}"
        f"{'ttft p50':>10}{'ttft p99':>10}{'rejected':>10}",
    ]
    for name, t in summary["tenants"].items():
        lines.append(
            f"{name:<16}{_fmt(t['weight']):>7}{t['served_tokens']:>12}"
            f"{_fmt(t['wait_p50_s']):>10}{_fmt(t['wait_p99_s']):>10}"
            f"{_fmt(t['ttft_p50_s']):>10}{_fmt(t['ttft_p99_s']):>10}{t['rejections']:>10}"
        )
    return "\n".join(lines)
