"""Sizes and the run's plan of server instances."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks.peers.results import System, Tier
from benchmarks.peers.workloads import FULL, QUICK, Sizes, Step, Workload, plan


def test_quick_is_smaller_than_full_everywhere() -> None:
    for name in ("produce_count", "publish_one_count", "topics", "fanin_topics", "fanin_rate"):
        assert getattr(QUICK, name) < getattr(FULL, name)
    assert QUICK.step_seconds < FULL.step_seconds
    # The sizes: a million session topics, fan-in of 100,000, 1 KiB messages.
    assert FULL.topics == 1_000_000
    assert FULL.fanin_topics == 100_000
    assert FULL.message_bytes == 1024


def test_sizes_name_a_bad_field() -> None:
    with pytest.raises(ValueError, match="batch is 0"):
        dataclasses.replace(QUICK, batch=0)
    with pytest.raises(ValueError, match="fanin_seconds is -1"):
        dataclasses.replace(QUICK, fanin_seconds=-1.0)


def test_plan_interleaves_systems_within_each_group() -> None:
    steps = plan(list(System), list(Workload))
    throughput = (Workload.PRODUCE, Workload.CONSUME, Workload.PUBLISH_ONE)
    assert steps[:3] == [Step(s, Tier.WINDOW, throughput) for s in System]
    assert steps[3:6] == [Step(s, Tier.FSYNC, throughput) for s in System]
    assert steps[6:9] == [Step(s, Tier.WINDOW, (Workload.TOPICS,)) for s in System]
    assert steps[9:] == [Step(s, Tier.WINDOW, (Workload.FANIN,)) for s in System]


def test_plan_leaves_out_what_cannot_run_and_what_was_not_asked() -> None:
    steps = plan(
        [System.TIDEGATE, System.JETSTREAM],
        [Workload.PUBLISH_ONE, Workload.FANIN],
        unavailable={(System.JETSTREAM, Tier.FSYNC)},
    )
    assert steps == [
        Step(System.TIDEGATE, Tier.WINDOW, (Workload.PUBLISH_ONE,)),
        Step(System.JETSTREAM, Tier.WINDOW, (Workload.PUBLISH_ONE,)),
        Step(System.TIDEGATE, Tier.FSYNC, (Workload.PUBLISH_ONE,)),
        Step(System.TIDEGATE, Tier.WINDOW, (Workload.FANIN,)),
        Step(System.JETSTREAM, Tier.WINDOW, (Workload.FANIN,)),
    ]


def test_consume_always_follows_produce_on_the_same_instance() -> None:
    for step in plan(list(System), [Workload.CONSUME, Workload.PRODUCE]):
        assert step.workloads == (Workload.PRODUCE, Workload.CONSUME)


def test_sizes_is_a_frozen_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        QUICK.batch = 5  # type: ignore[misc]
    assert isinstance(QUICK, Sizes)


def test_plan_repeats_only_the_throughput_groups() -> None:
    steps = plan([System.REDIS], list(Workload), rounds=3)
    throughput = [s for s in steps if Workload.PRODUCE in s.workloads]
    assert [(s.round, s.tier) for s in throughput] == [
        (1, Tier.WINDOW),
        (1, Tier.FSYNC),
        (2, Tier.WINDOW),
        (2, Tier.FSYNC),
        (3, Tier.WINDOW),
        (3, Tier.FSYNC),
    ]
    assert [s.workloads for s in steps[6:]] == [(Workload.TOPICS,), (Workload.FANIN,)]
    assert FULL.rounds == 3
    assert QUICK.rounds == 1
