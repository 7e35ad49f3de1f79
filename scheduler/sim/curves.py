"""Cumulative curves over time and the interval arithmetic the summary needs.

Pure helpers: a tenant's service as a piecewise-linear (or step) function of
time, unions and intersections of sorted interval lists. Kept apart from the
summary so that the arithmetic can be tested on its own.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

__all__ = ["Curve", "intersect", "merge_intervals", "overlap_s", "total_s"]

Interval = tuple[float, float]


class Curve:
    """A non-decreasing cumulative amount A(t), A(t) = 0 before the first point.

    Built from linear spans (``amount`` spread evenly over ``[start, end]``)
    or from steps (``amount`` added at an instant). Between points it is
    linear (``linear=True``) or flat. Where two points share a time, the
    value at that time is the later one (right-continuous).
    """

    __slots__ = ("linear", "times", "values")

    def __init__(self, times: list[float], values: list[float], *, linear: bool) -> None:
        self.times = times
        self.values = values
        self.linear = linear

    @classmethod
    def from_spans(cls, spans: Iterable[tuple[float, float, float]]) -> Curve:
        """``spans`` of (start, end, amount); zero-length spans are steps."""
        rate_changes: dict[float, float] = {}
        jumps: dict[float, float] = {}
        for start, end, amount in spans:
            if amount == 0:
                continue
            if end > start:
                rate = amount / (end - start)
                rate_changes[start] = rate_changes.get(start, 0.0) + rate
                rate_changes[end] = rate_changes.get(end, 0.0) - rate
            else:
                jumps[start] = jumps.get(start, 0.0) + amount
        times: list[float] = []
        values: list[float] = []
        rate = 0.0
        value = 0.0
        last = None
        for t in sorted(set(rate_changes) | set(jumps)):
            if last is not None:
                value += rate * (t - last)
            if t in jumps:
                times.append(t)
                values.append(value)
                value += jumps[t]
            times.append(t)
            values.append(value)
            rate += rate_changes.get(t, 0.0)
            last = t
        return cls(times, values, linear=True)

    @classmethod
    def from_steps(cls, steps: Iterable[tuple[float, float]]) -> Curve:
        """``steps`` of (time, amount); amounts may be negative (refunds)."""
        merged: dict[float, float] = {}
        for t, amount in steps:
            merged[t] = merged.get(t, 0.0) + amount
        times: list[float] = []
        values: list[float] = []
        value = 0.0
        for t in sorted(merged):
            value += merged[t]
            times.append(t)
            values.append(value)
        return cls(times, values, linear=False)

    def at(self, t: float) -> float:
        times = self.times
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            return 0.0
        if not self.linear or i + 1 >= len(times):
            return self.values[i]
        t0, t1 = times[i], times[i + 1]
        v0, v1 = self.values[i], self.values[i + 1]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def breakpoints(self, start: float, end: float) -> list[float]:
        """The curve's point times strictly inside ``(start, end)``."""
        lo = bisect.bisect_right(self.times, start)
        hi = bisect.bisect_left(self.times, end)
        return self.times[lo:hi]


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-empty; touching intervals are joined."""
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Intersection of two merged interval lists."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def total_s(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def overlap_s(a: Sequence[Interval], b: Sequence[Interval]) -> float:
    return total_s(intersect(a, b))
