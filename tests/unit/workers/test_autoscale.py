"""The autoscaling policy: scripted queue depths over time -> scale decisions."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from workers.autoscale import AutoscaleConfig, QueueDepthAutoscaler, ScaleDecision
from workers.errors import WorkerConfigError

CONFIG = AutoscaleConfig(
    min_replicas=1,
    max_replicas=3,
    up_queued_per_replica=4.0,
    down_queued_per_replica=1.0,
    up_after_s=5.0,
    down_after_s=10.0,
    cooldown_s=20.0,
)


def play(
    policy: QueueDepthAutoscaler,
    script: Sequence[tuple[float, float | None]],
    replicas: int,
    headroom: int | None = None,
) -> list[tuple[float, ScaleDecision]]:
    """Feed (time, queued) readings, applying each change as the fleet would;
    returns the changes with their times."""
    changes: list[tuple[float, ScaleDecision]] = []
    for now, queued in script:
        decision = policy.observe(now, queued, replicas, headroom)
        if decision.action != "hold":
            changes.append((now, decision))
            replicas = decision.replicas
    return changes


def every(
    step: float, start: float, end: float, queued: float | None
) -> list[tuple[float, float | None]]:
    n = round((end - start) / step)
    return [(start + i * step, queued) for i in range(n)]


def test_a_queue_that_stays_high_adds_one_replica_after_up_after_s() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    changes = play(policy, every(1.0, 0.0, 8.0, 10.0), replicas=1)
    assert [(t, d.action, d.replicas) for t, d in changes] == [(5.0, "add", 2)]
    assert "queued 10 > 4 x 1 for 5.0 s" in changes[0][1].reason


def test_a_spike_shorter_than_up_after_s_changes_nothing() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    script = [*every(1.0, 0.0, 4.0, 50.0), (4.0, 2.0), *every(1.0, 5.0, 9.0, 50.0)]
    assert play(policy, script, replicas=1) == []


def test_the_threshold_is_per_replica() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    # 7 queued is high for one replica (> 4) but not for two (<= 8).
    assert play(policy, every(1.0, 0.0, 10.0, 7.0), replicas=2) == []
    assert [d.replicas for _, d in play(policy, every(1.0, 10.0, 20.0, 9.0), replicas=2)] == [3]


def test_cooldown_spaces_changes_and_a_change_restarts_the_streak() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    changes = play(policy, every(1.0, 0.0, 60.0, 100.0), replicas=1)
    # 5 s of high -> add; 20 s cooldown (the streak restarted at the change,
    # and the readings of the cooldown count towards the next one) -> add at 25.
    assert [(t, d.replicas) for t, d in changes] == [(5.0, 2), (25.0, 3)]
    assert "at max_replicas" in policy.stats().last_reason
    assert policy.stats().added == 2


def test_a_queue_that_stays_low_removes_down_to_min_replicas() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    changes = play(policy, every(1.0, 0.0, 80.0, 0.0), replicas=3)
    assert [(t, d.action, d.replicas) for t, d in changes] == [
        (10.0, "remove", 2),
        (30.0, "remove", 1),
    ]
    assert play(policy, every(1.0, 80.0, 200.0, 0.0), replicas=1) == []
    assert "at min_replicas" in policy.stats().last_reason


def test_between_the_thresholds_the_fleet_holds() -> None:
    """Hysteresis: 3 queued on two replicas is neither high (> 8) nor low (<= 2)."""
    policy = QueueDepthAutoscaler(CONFIG)
    assert play(policy, every(1.0, 0.0, 300.0, 3.0), replicas=2) == []


def test_a_queue_swinging_around_one_threshold_does_not_flap() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    # High for 6 s, low for 6 s, over and over: each low spell is shorter
    # than down_after_s, so after one add nothing comes back down.
    script = [(float(t), 20.0 if (t // 6) % 2 == 0 else 0.0) for t in range(200)]
    changes = play(policy, script, replicas=1)
    assert [d.action for _, d in changes] == ["add", "add"]
    (first, _), (second, _) = changes
    assert second - first >= CONFIG.cooldown_s


def test_a_burst_then_idle_grows_then_shrinks_back() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    script = [*every(1.0, 0.0, 30.0, 40.0), *every(1.0, 30.0, 120.0, 0.0)]
    changes = play(policy, script, replicas=1)
    assert [(t, d.replicas) for t, d in changes] == [(5.0, 2), (25.0, 3), (45.0, 2), (65.0, 1)]


def test_a_failed_reading_breaks_the_streak() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    script = [*every(1.0, 0.0, 4.0, 50.0), (4.0, None), *every(1.0, 5.0, 9.0, 50.0)]
    assert play(policy, script, replicas=1) == []
    stats = policy.stats()
    assert (stats.failed_readings, stats.readings) == (1, 8)
    assert policy.observe(9.0, None, 1).reason == "the queue depth is unknown"


def test_no_room_in_ray_holds_the_fleet_until_there_is() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    assert play(policy, every(1.0, 0.0, 10.0, 50.0), replicas=1, headroom=0) == []
    assert "no room" in policy.stats().last_reason
    # A GPU frees up: the streak has held all along, so the add comes at once.
    decision = policy.observe(10.0, 50.0, 1, headroom=1)
    assert (decision.action, decision.replicas) == ("add", 2)


def test_out_of_bounds_is_brought_back_one_step_at_a_time() -> None:
    policy = QueueDepthAutoscaler(CONFIG)
    assert policy.observe(0.0, 0.0, 0).action == "add"  # an actor lost below min
    policy = QueueDepthAutoscaler(CONFIG)
    changes = play(policy, every(1.0, 0.0, 50.0, 4.0), replicas=5)
    assert [(t, d.action, d.replicas) for t, d in changes] == [
        (0.0, "remove", 4),
        (20.0, "remove", 3),
    ]


def test_zero_times_act_on_the_first_reading() -> None:
    config = AutoscaleConfig(1, 2, up_after_s=0.0, down_after_s=0.0, cooldown_s=0.0)
    policy = QueueDepthAutoscaler(config)
    assert policy.observe(0.0, 5.0, 1).action == "add"
    assert policy.observe(0.1, 0.0, 2).action == "remove"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 0, "max_replicas": 2}, "min_replicas is 0; it must be >= 1"),
        (
            {"min_replicas": 3, "max_replicas": 2},
            "max_replicas is 2; it must be >= min_replicas (3)",
        ),
        (
            {
                "min_replicas": 1,
                "max_replicas": 2,
                "up_queued_per_replica": 1.0,
                "down_queued_per_replica": 1.0,
            },
            "up_queued_per_replica is 1.0; it must be above down_queued_per_replica (1.0)",
        ),
        ({"min_replicas": 1, "max_replicas": 2, "down_queued_per_replica": -1.0}, "must be >= 0"),
        ({"min_replicas": 1, "max_replicas": 2, "cooldown_s": float("inf")}, "cooldown_s is inf"),
    ],
)
def test_bad_settings_name_the_value_and_the_rule(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(WorkerConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AutoscaleConfig(**kwargs)  # type: ignore[arg-type]
