"""Dispatch to workers and the rest of a request's life: leases, cancel, deadlines, reload."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import FrozenInstanceError

import pytest

from scheduler.errors import (
    ConfigError,
    SchedulerError,
    UnknownPolicyError,
    UnknownWorkerError,
    WorkerExistsError,
)
from scheduler.policy import POLICY_NAMES, create_policy
from scheduler.types import (
    Dropped,
    RateLimit,
    Refusal,
    RefusalReason,
    WindowConfig,
    WorkerFeedback,
)

from .support import admit, config, fixed_window, ids, policy, req, run_one_at_a_time, tenant

# ------------------------------------------------------------------ choosing workers


def test_fill_goes_to_the_most_free_window_and_leaves_none_free() -> None:
    p = policy("tidegate", workers=2, window=4)
    admit(p, *(req(f"r{i}") for i in range(20)))
    assert len(p.dispatch(0.0, "w0", 3)) == 3
    [d] = p.dispatch(0.0, limit=1)
    assert d.worker_id == "w1"  # 4 free against 1
    rest = p.dispatch(0.0)
    assert Counter(x.worker_id for x in rest) == {"w0": 1, "w1": 3}
    assert p.dispatch(0.0) == []
    assert p.in_flight() == 8
    assert p.queued() == 12


def test_ties_in_free_window_go_to_the_lighter_load() -> None:
    p = policy("tidegate", workers=2, window=2)
    admit(p, req("big", input_tokens=5000), req("small", input_tokens=5), req("next"))
    assert ids(p.dispatch(0.0, "w0", 1)) == ["big"]
    assert ids(p.dispatch(0.0, "w1", 1)) == ["small"]
    [d] = p.dispatch(0.0)
    assert d.worker_id == "w1"
    assert p.stats().workers["w0"].load_tokens == 5010


def test_full_ties_are_broken_by_the_seeded_rng() -> None:
    def first_choice(seed: int) -> str:
        p = policy("tidegate", workers=4, window=1, seed=seed)
        admit(p, req("r"))
        [d] = p.dispatch(0.0)
        return d.worker_id

    assert first_choice(3) == first_choice(3)
    assert len({first_choice(seed) for seed in range(40)}) == 4


def test_a_pulling_worker_gets_at_most_its_free_window() -> None:
    p = policy("tidegate", workers=1, window=3)
    admit(p, *(req(f"r{i}") for i in range(10)))
    assert p.dispatch(0.0, "w0", 0) == []
    assert len(p.dispatch(0.0, "w0", 2)) == 2
    assert len(p.dispatch(0.0, "w0", 5)) == 1
    assert p.dispatch(0.0, "w0") == []
    p.complete("r0", 1, 1, 1.0)
    assert ids(p.dispatch(1.0, "w0")) == ["r3"]


def test_worker_ids_are_checked() -> None:
    p = policy("tidegate", workers=1)
    with pytest.raises(WorkerExistsError, match="'w0'"):
        p.add_worker("w0", 0.0)
    with pytest.raises(UnknownWorkerError, match="'w9'"):
        p.dispatch(0.0, "w9")
    with pytest.raises(UnknownWorkerError):
        p.remove_worker("w9", 0.0)
    with pytest.raises(UnknownWorkerError):
        p.feedback("w9", WorkerFeedback(), 0.0)


def test_no_workers_means_nothing_dispatched() -> None:
    p = policy("tidegate", workers=0)
    admit(p, req("r1"))
    assert p.dispatch(0.0) == []
    assert p.preemptions(0.0) == []


# ------------------------------------------------------------------ requeue at its place


def test_removed_worker_hands_back_its_requests_at_their_place() -> None:
    p = policy("tidegate", tenant("a"), workers=2, window=2)
    admit(p, *(req(f"a{i}", "a") for i in range(4)))
    assert ids(p.dispatch(0.0, "w1")) == ["a0", "a1"]
    assert ids(p.dispatch(0.0, "w0")) == ["a2", "a3"]
    admit(p, req("a4", "a"))
    back = p.remove_worker("w1", 1.0)
    assert [r.request_id for r in back] == ["a0", "a1"]
    assert (p.queued(), p.in_flight()) == (3, 2)
    p.add_worker("w2", 1.0)
    # Ahead of a4, which arrived later.
    assert ids(p.dispatch(1.0)) == ["a0", "a1"]
    assert p.stats().requeued == 2


def test_lease_expiry_requeues_and_refunds_unserved_work() -> None:
    p = policy("tidegate", tenant("a"), workers=1, window=2)
    admit(p, req("a0", "a", input_tokens=100, output_tokens=10))
    admit(p, req("a1", "a", input_tokens=100, output_tokens=10))
    p.dispatch(0.0)
    assert p.stats().tenants["a"].charged == 240.0
    p.first_token("a1", 0.5)
    p.lease_expired("a0", 1.0)
    p.lease_expired("a1", 1.0)
    # a0 never started: free. a1 had processed its prompt: the input is earned.
    assert p.stats().tenants["a"].charged == 100.0
    redo = p.dispatch(1.0)
    assert ids(redo) == ["a0", "a1"]
    assert [d.done_output_tokens for d in redo] == [0, 0]
    assert p.stats().tenants["a"].charged == 240.0


# ------------------------------------------------------------------ cancel and deadlines


def test_cancel_queued_running_and_unknown() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("r1"), req("r2"), req("r3"))
    p.dispatch(0.0)
    assert p.cancel("r2", 0.0)
    assert p.cancel("r1", 0.0)  # running: its window slot is free again
    assert not p.cancel("r1", 0.0)
    assert not p.cancel("ghost", 0.0)
    assert ids(p.dispatch(0.0)) == ["r3"]
    assert p.stats().cancelled == 2
    assert (p.queued(), p.in_flight()) == (0, 1)


def test_cancelling_a_whole_tenant_queue_then_refilling_it() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("a1", "a"), req("a2", "a"), req("b1", "b"))
    assert p.cancel("a1", 0.0)
    assert p.cancel("a2", 0.0)
    admit(p, req("a3", "a"))
    assert sorted(ids(run_one_at_a_time(p, 5))) == ["a3", "b1"]


def test_expire_drops_queued_requests_past_their_deadline_only() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("run", deadline_s=5.0), req("late", deadline_s=5.0), req("ok", deadline_s=50.0))
    admit(p, req("none"))
    assert ids(p.dispatch(0.0)) == ["run"]
    assert p.expire(4.9) == []
    [dropped] = p.expire(5.0)
    assert dropped == Dropped(req("late", deadline_s=5.0), RefusalReason.DEADLINE)
    assert p.expire(6.0) == []
    assert p.queued() == 2
    assert p.stats().dropped == {RefusalReason.DEADLINE: 1}
    assert p.stats().tenants["a"].dropped == {RefusalReason.DEADLINE: 1}
    p.complete("run", 1, 1, 6.0)  # a running request is never dropped


def test_dispatch_never_hands_out_a_request_past_its_deadline() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("late", deadline_s=2.0), req("next"))
    # The runtime forgot to call expire() first: dispatch skips it anyway ...
    assert ids(p.dispatch(3.0)) == ["next"]
    # ... and the next expire() reports it.
    assert [d.request.request_id for d in p.expire(3.0)] == ["late"]
    assert p.stats().tenants["a"].charged == 30.0  # the dropped one costs nothing


def test_a_preempted_request_past_its_deadline_is_dropped_too() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("l", "a", 0, deadline_s=10.0))
    p.dispatch(0.0)
    admit(p, req("h", "b", 2))
    [pre] = p.preemptions(1.0)
    p.preempted(pre.request_id, 4, 1.0)
    p.dispatch(1.0)
    assert [d.request.request_id for d in p.expire(10.0)] == ["l"]


# ------------------------------------------------------------------ hot reload


def test_hot_reload_keeps_queued_requests_and_applies_new_weights() -> None:
    p = policy("tidegate", tenant("a"), tenant("b"), workers=1, window=1)
    for index in range(300):
        admit(p, req(f"a{index}", "a"), req(f"b{index}", "b"))
    equal = Counter(d.request.tenant for d in run_one_at_a_time(p, 100))
    assert equal == {"a": 50, "b": 50}
    p.update_config(config(tenant("a", weight=3.0), tenant("b"), window=fixed_window(1)), 1.0)
    assert p.queued() == 500
    weighted = Counter(d.request.tenant for d in run_one_at_a_time(p, 200, now=1.0))
    assert weighted["a"] == pytest.approx(150, abs=2)


def test_a_tenant_dropped_from_config_refuses_new_work_but_keeps_its_queue() -> None:
    p = policy("tidegate", tenant("a"), tenant("b"), workers=1, window=1)
    admit(p, req("a1", "a"), req("a2", "a"))
    p.update_config(config(tenant("b"), window=fixed_window(1)), 1.0)
    result = p.submit(req("a3", "a"), 1.0)
    assert isinstance(result, Refusal)
    assert result.reason == RefusalReason.UNKNOWN_TENANT
    assert ids(run_one_at_a_time(p, 5, now=1.0)) == ["a1", "a2"]
    # Coming back into the config restores it.
    p.update_config(config(tenant("a"), tenant("b"), window=fixed_window(1)), 2.0)
    admit(p, req("a3", "a"), now=2.0)


def test_hot_reload_changes_quotas_and_windows() -> None:
    p = policy("tidegate", tenant("a", rate=RateLimit(requests_per_s=1.0)), workers=1, window=2)
    admit(p, req("r1"))
    assert isinstance(p.submit(req("r2"), 0.0), Refusal)
    new = config(
        tenant("a", rate=RateLimit(requests_per_s=100.0, burst_s=1.0)),
        window=WindowConfig(initial=1, minimum=1, maximum=1),
    )
    p.update_config(new, 0.0)
    # The bucket was empty and stays empty (no free burst from a reload) ...
    refusal = p.submit(req("r2"), 0.0)
    assert isinstance(refusal, Refusal)
    # ... but it refills 100x faster.
    assert refusal.retry_after_s == pytest.approx(0.01)
    admit(p, req("r2"), now=0.01)
    assert p.stats().workers["w0"].window == 1
    assert len(p.dispatch(0.0)) == 1


def test_a_bad_reload_is_refused_and_changes_nothing() -> None:
    p = policy("tidegate", tenant("a"), workers=1, window=1)
    admit(p, req("r1"))
    with pytest.raises(ConfigError, match="weight"):
        p.update_config(config(tenant("a", weight=0.0)), 1.0)
    assert p.stats().tenants["a"].weight == 1.0
    assert p.queued() == 1


# ------------------------------------------------------------------ factory and stats


def test_create_policy_knows_a_closed_set_of_names() -> None:
    assert POLICY_NAMES == ("tidegate", "fifo", "round-robin", "strict-priority")
    for name in POLICY_NAMES:
        assert create_policy(name, config(), random.Random(0)).name == name
    with pytest.raises(UnknownPolicyError, match=r"'lottery'.*tidegate, fifo") as info:
        create_policy("lottery", config(), random.Random(0))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, SchedulerError)


def test_stats_are_a_frozen_snapshot() -> None:
    p = policy("tidegate", workers=1, window=1)
    admit(p, req("r1", "a", 1), req("r2", "b", 0))
    p.dispatch(0.0)
    stats = p.stats()
    assert stats.policy == "tidegate"
    assert (stats.queued, stats.in_flight, stats.admitted, stats.dispatched) == (1, 1, 2, 1)
    assert stats.bands[1].in_flight == 1
    assert stats.bands[0].queued == 1
    assert list(stats.bands) == [1, 0]
    with pytest.raises(FrozenInstanceError):
        stats.queued = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.tenants["z"] = stats.tenants["a"]  # type: ignore[index]
    p.complete("r1", 1, 1, 0.0)
    assert stats.in_flight == 1  # the snapshot did not move
