"""Jain's index of weight-normalised service among backlogged tenants, over a window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.fairness import FairnessWindow, TenantSample, jain_index


def test_jain_index_bounds() -> None:
    assert jain_index([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain_index([1.0, 3.0]) == pytest.approx(16 / 20)
    assert jain_index([]) is None
    assert jain_index([0.0, 0.0]) is None


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=20))
def test_jain_index_lies_between_one_over_n_and_one(values: list[float]) -> None:
    index = jain_index(values)
    if index is None:
        assert not any(values)
        return
    assert 1 / len(values) - 1e-9 <= index <= 1 + 1e-9


def _feed(window: FairnessWindow, steps: list[dict[str, TenantSample]]) -> None:
    for t, tenants in enumerate(steps):
        window.sample(float(t), tenants)


def test_service_in_proportion_to_weight_is_perfectly_fair() -> None:
    window = FairnessWindow(60.0)
    _feed(
        window,
        [
            {"a": TenantSample(300.0 * t, 3.0, True), "b": TenantSample(100.0 * t, 1.0, True)}
            for t in range(5)
        ],
    )
    figures = window.figures()
    assert figures.jain == pytest.approx(1.0)
    assert figures.backlogged == 2
    assert figures.service_share == pytest.approx({"a": 0.75, "b": 0.25})
    assert figures.weight_share == pytest.approx({"a": 0.75, "b": 0.25})


def test_equal_service_to_unequal_weights_is_unfair() -> None:
    window = FairnessWindow(60.0)
    _feed(
        window,
        [
            {"a": TenantSample(100.0 * t, 3.0, True), "b": TenantSample(100.0 * t, 1.0, True)}
            for t in range(5)
        ],
    )
    # x_a = 100/3, x_b = 100: (133.3)^2 / (2 * (1111 + 10000)) = 0.8
    assert window.figures().jain == pytest.approx(0.8)


def test_a_tenant_that_never_waits_is_not_judged() -> None:
    window = FairnessWindow(60.0)
    _feed(
        window,
        [
            {
                "a": TenantSample(100.0 * t, 1.0, True),
                "b": TenantSample(100.0 * t, 1.0, True),
                "idle": TenantSample(5.0 * t, 1.0, False),  # got all it asked for
            }
            for t in range(5)
        ],
    )
    figures = window.figures()
    assert figures.jain == pytest.approx(1.0)
    assert figures.backlogged == 2
    assert set(figures.service_share) == {"a", "b", "idle"}  # it was served: it is active


def test_service_counts_only_while_backlogged_and_per_second_waited() -> None:
    window = FairnessWindow(60.0)
    # b waits only in the second half, and gets the same rate as a meanwhile: fair.
    steps = []
    for t in range(9):
        b_waiting = t >= 4
        steps.append(
            {
                "a": TenantSample(100.0 * t, 1.0, True),
                "b": TenantSample(100.0 * max(0, t - 4), 1.0, b_waiting),
            }
        )
    _feed(window, steps)
    assert window.figures().jain == pytest.approx(1.0)


def test_old_samples_leave_the_window() -> None:
    window = FairnessWindow(10.0)
    unfair = [
        {"a": TenantSample(1000.0 * t, 1.0, True), "b": TenantSample(0.0, 1.0, True)}
        for t in range(5)
    ]
    _feed(window, unfair)
    assert window.figures().jain == pytest.approx(0.5)
    base = 4000.0
    for t in range(5, 30):  # then both get the same for long enough
        window.sample(
            float(t),
            {
                "a": TenantSample(base + 100.0 * (t - 4), 1.0, True),
                "b": TenantSample(100.0 * (t - 4), 1.0, True),
            },
        )
    assert window.figures().jain == pytest.approx(1.0)


def test_no_samples_no_judgement_and_time_only_moves_on() -> None:
    window = FairnessWindow(5.0)
    assert window.figures().jain is None
    window.sample(1.0, {"a": TenantSample(0.0, 1.0, True)})
    assert window.figures().jain is None  # one sample: no interval yet
    with pytest.raises(ValueError, match="before the last one"):
        window.sample(0.5, {})
    with pytest.raises(ValueError, match="window_s"):
        FairnessWindow(0.0)


def test_a_counter_reset_does_not_count_as_negative_service() -> None:
    window = FairnessWindow(60.0)
    window.sample(0.0, {"a": TenantSample(500.0, 1.0, True), "b": TenantSample(0.0, 1.0, True)})
    window.sample(1.0, {"a": TenantSample(0.0, 1.0, True), "b": TenantSample(100.0, 1.0, True)})
    figures = window.figures()
    assert figures.service_share == pytest.approx({"a": 0.0, "b": 1.0})
    assert figures.jain == pytest.approx(0.5)
