"""Cumulative curves and interval arithmetic."""

from __future__ import annotations

import pytest

from scheduler.sim.curves import Curve, intersect, merge_intervals, overlap_s, total_s


def test_spans_accumulate_linearly_and_overlap() -> None:
    curve = Curve.from_spans([(0.0, 2.0, 10.0), (1.0, 3.0, 4.0)])
    assert curve.at(-1.0) == 0.0
    assert curve.at(0.0) == 0.0
    assert curve.at(1.0) == pytest.approx(5.0)
    assert curve.at(2.0) == pytest.approx(12.0)
    assert curve.at(2.5) == pytest.approx(13.0)
    assert curve.at(99.0) == pytest.approx(14.0)


def test_zero_length_span_is_a_jump() -> None:
    curve = Curve.from_spans([(1.0, 1.0, 5.0), (0.0, 2.0, 2.0)])
    assert curve.at(0.999) == pytest.approx(0.999)
    assert curve.at(1.0) == pytest.approx(6.0)
    assert curve.at(2.0) == pytest.approx(7.0)


def test_steps_are_flat_between_and_may_refund() -> None:
    curve = Curve.from_steps([(1.0, 10.0), (3.0, -4.0), (1.0, 1.0)])
    assert curve.at(0.5) == 0.0
    assert curve.at(1.0) == 11.0
    assert curve.at(2.9) == 11.0
    assert curve.at(3.0) == 7.0


def test_breakpoints_inside_an_interval() -> None:
    curve = Curve.from_steps([(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)])
    assert curve.breakpoints(1.0, 3.0) == [2.0]
    assert curve.breakpoints(0.0, 5.0) == [1.0, 2.0, 3.0]


def test_interval_helpers() -> None:
    merged = merge_intervals([(3.0, 4.0), (0.0, 1.0), (1.0, 2.0), (5.0, 5.0), (3.5, 3.8)])
    assert merged == [(0.0, 2.0), (3.0, 4.0)]
    assert total_s(merged) == 3.0
    other = [(1.5, 3.5)]
    assert intersect(merged, other) == [(1.5, 2.0), (3.0, 3.5)]
    assert overlap_s(merged, other) == 1.0
    assert intersect([], other) == []
