"""Properties of every policy over random sequences of calls.

A state machine drives submit / dispatch / complete / preempt / lease
expiry / cancel / expire / worker churn / feedback against a reference model
of where each request is (queued, running on a worker, or gone), and checks:

- nothing is lost or duplicated: every request the policy hands out is one
  the model has queued, and the counts always agree;
- work conservation: after a fill, either nothing is queued or no worker
  has a free window (the window is the capacity);
- band order (tidegate, strict-priority): no request is dispatched while a
  request of a higher band stays queued;
- preemption names only running requests of a band below a waiting one.

A second property checks the VTC share bound under saturation.
"""

from __future__ import annotations

import random
from types import MappingProxyType

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from scheduler.policy import Policy, create_policy
from scheduler.types import (
    Admitted,
    Request,
    SchedulerConfig,
    TenantConfig,
    WindowConfig,
    WorkerFeedback,
)

TENANTS = ("a", "b", "c")
WINDOW = WindowConfig(initial=2, minimum=1, maximum=4, decrease=0.5, adjust_interval_s=0.0)


def _config() -> SchedulerConfig:
    tenants = {
        name: TenantConfig(name, weight=float(index + 1), max_priority=2, max_queued=20)
        for index, name in enumerate(TENANTS)
    }
    return SchedulerConfig(
        tenants=MappingProxyType(tenants),
        max_queued_total=15,
        shed_queue_fraction=0.7,
        window=WINDOW,
    )


feedbacks = st.builds(
    WorkerFeedback,
    ttft_s=st.none() | st.floats(0.0, 1.5),
    queue_depth=st.none() | st.integers(0, 5),
    gpu_util=st.none() | st.floats(0.0, 1.0),
)


bursts = st.lists(st.tuples(st.sampled_from(TENANTS), st.integers(-1, 2)), min_size=1, max_size=8)


class PolicyMachine(RuleBasedStateMachine):
    policy_name = "tidegate"
    banded = True

    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.next_id = 0
        self.next_worker = 0
        self.requests: dict[str, Request] = {}
        self.queued: set[str] = set()
        self.running: dict[str, str] = {}  # request id -> worker id
        self.gone: set[str] = set()
        self.live_workers: set[str] = set()
        self.pending_preempts: set[str] = set()
        self.policy: Policy = create_policy(self.policy_name, _config(), random.Random(0))

    # -------------------------------------------------------------- helpers

    def _take_drops(self) -> None:
        for dropped in self.policy.expire(self.now):
            rid = dropped.request.request_id
            assert rid in self.queued, f"dropped {rid} was not queued"
            deadline = self.requests[rid].deadline_s
            assert deadline is not None
            assert deadline <= self.now
            self.queued.remove(rid)
            self.gone.add(rid)

    def _back_to_queue(self, rid: str) -> None:
        del self.running[rid]
        self.pending_preempts.discard(rid)
        self.queued.add(rid)

    def _max_queued_band(self) -> int | None:
        bands = [band for band, s in self.policy.stats().bands.items() if s.queued > 0]
        return max(bands) if bands else None

    # -------------------------------------------------------------- rules

    def _new_worker(self) -> str:
        wid = f"w{self.next_worker}"
        self.next_worker += 1
        self.policy.add_worker(wid, self.now)
        self.live_workers.add(wid)
        return wid

    @initialize(target=workers)
    def first_worker(self) -> str:
        return self._new_worker()

    # Few workers, so windows fill up and preemption has something to do.
    @precondition(lambda self: len(self.live_workers) < 3)
    @rule(target=workers)
    def add_worker(self) -> str:
        return self._new_worker()

    @precondition(lambda self: len(self.live_workers) > 1)
    @rule(worker=consumes(workers))
    def remove_worker(self, worker: str) -> None:
        if worker not in self.live_workers:
            return
        handed_back = self.policy.remove_worker(worker, self.now)
        self.live_workers.remove(worker)
        expected = sorted(rid for rid, w in self.running.items() if w == worker)
        assert sorted(r.request_id for r in handed_back) == expected
        for rid in expected:
            self._back_to_queue(rid)

    def _submit(
        self, tenant: str, priority: int, tokens: tuple[int, int], deadline: float | None
    ) -> None:
        rid = f"r{self.next_id}"
        self.next_id += 1
        request = Request(
            rid,
            tenant,
            priority,
            tokens[0],
            tokens[1],
            arrival_s=self.now,
            deadline_s=None if deadline is None else self.now + deadline,
        )
        before = self.policy.queued()
        result = self.policy.submit(request, self.now)
        if isinstance(result, Admitted):
            self.requests[rid] = request
            self.queued.add(rid)
        else:
            assert result.retry_after_s >= 0
            assert self.policy.queued() == before

    @rule(
        tenant=st.sampled_from((*TENANTS, "ghost")),
        priority=st.integers(-1, 2),
        tokens=st.tuples(st.integers(0, 500), st.integers(0, 500)),
        deadline=st.none() | st.floats(0.1, 5.0),
    )
    def submit(
        self, tenant: str, priority: int, tokens: tuple[int, int], deadline: float | None
    ) -> None:
        self._submit(tenant, priority, tokens, deadline)

    @initialize(burst=bursts)
    def first_burst(self, burst: list[tuple[str, int]]) -> None:
        self.submit_burst(burst)

    @rule(burst=bursts)
    def submit_burst(self, burst: list[tuple[str, int]]) -> None:
        """Several requests at once: enough to fill every window and leave some waiting."""
        for tenant, priority in burst:
            self._submit(tenant, priority, (100, 50), None)

    @rule(worker=st.none() | workers, limit=st.none() | st.integers(0, 3))
    def dispatch(self, worker: str | None, limit: int | None) -> None:
        if worker is not None and worker not in self.live_workers:
            return
        out = self.policy.dispatch(self.now, worker, limit)
        if limit is not None:
            assert len(out) <= limit
        seen: set[str] = set()
        for decision in out:
            rid = decision.request.request_id
            assert rid in self.queued, f"{rid} dispatched but not queued (lost or duplicated)"
            assert rid not in seen
            seen.add(rid)
            assert decision.worker_id in self.live_workers
            if worker is not None:
                assert decision.worker_id == worker
            self.queued.remove(rid)
            self.running[rid] = decision.worker_id
        if self.banded and out:
            bands = [d.request.priority for d in out]
            assert bands == sorted(bands, reverse=True), "a call serves higher bands first"
            top = self._max_queued_band()
            assert top is None or min(bands) >= top, "a higher band was left waiting"
        self._take_drops()
        if worker is None and limit is None:
            stats = self.policy.stats()
            full = all(w.in_flight >= w.window for w in stats.workers.values())
            assert stats.queued == 0 or full, "a free window was left while requests queue"

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data(), real=st.tuples(st.integers(0, 500), st.integers(0, 500)))
    def complete(self, data: st.DataObject, real: tuple[int, int]) -> None:
        rid = data.draw(st.sampled_from(sorted(self.running)))
        if data.draw(st.booleans()):
            self.policy.first_token(rid, self.now)
        self.policy.complete(rid, real[0], real[1], self.now)
        del self.running[rid]
        self.pending_preempts.discard(rid)
        self.gone.add(rid)

    @rule(tenant=st.sampled_from(TENANTS), answer=st.booleans(), done=st.integers(0, 50))
    def urgent_arrival(self, tenant: str, answer: bool, done: int) -> None:
        """A top-band request arrives into a busy fleet: the case preemption is for."""
        self.dispatch(None, None)
        self._submit(tenant, 2, (100, 50), None)
        self.preempt(answer, done)

    @rule(answer=st.booleans(), done=st.integers(0, 50))
    def preempt(self, answer: bool, done: int) -> None:
        orders = self.policy.preemptions(self.now)
        if orders:
            assert self.banded, "only banded policies preempt"
            top = self._max_queued_band()
            assert top is not None
        for order in orders:
            rid = order.request_id
            assert self.running.get(rid) == order.worker_id
            assert rid not in self.pending_preempts, f"{rid} named twice"
            assert top is not None
            assert self.requests[rid].priority < top
            self.pending_preempts.add(rid)
            if answer:
                self.policy.preempted(rid, done, self.now)
                self._back_to_queue(rid)

    @precondition(lambda self: len(self.running) > 1)
    @rule(data=st.data())
    def complete_several(self, data: st.DataObject) -> None:
        chosen = data.draw(st.sets(st.sampled_from(sorted(self.running)), min_size=1))
        for rid in sorted(chosen):
            self.policy.complete(rid, 100, 50, self.now)
            del self.running[rid]
            self.pending_preempts.discard(rid)
            self.gone.add(rid)

    @precondition(lambda self: bool(self.pending_preempts))
    @rule(data=st.data(), done=st.integers(0, 50))
    def answer_preempt(self, data: st.DataObject, done: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.pending_preempts)))
        self.policy.preempted(rid, done, self.now)
        self._back_to_queue(rid)

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data())
    def lease_expired(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.running)))
        self.policy.lease_expired(rid, self.now)
        self._back_to_queue(rid)

    @precondition(lambda self: self.next_id > 0)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        rid = f"r{data.draw(st.integers(0, self.next_id))}"
        live = rid in self.queued or rid in self.running
        assert self.policy.cancel(rid, self.now) == live
        if live:
            self.queued.discard(rid)
            self.running.pop(rid, None)
            self.pending_preempts.discard(rid)
            self.gone.add(rid)

    @rule(step=st.floats(0.0, 2.0))
    def advance(self, step: float) -> None:
        self.now += step

    @rule()
    def expire(self) -> None:
        self._take_drops()

    @rule(worker=workers, feedback=feedbacks)
    def feedback(self, worker: str, feedback: WorkerFeedback) -> None:
        if worker in self.live_workers:
            self.policy.feedback(worker, feedback, self.now)

    # -------------------------------------------------------------- invariants

    @invariant()
    def counts_agree(self) -> None:
        assert self.policy.queued() == len(self.queued)
        assert self.policy.in_flight() == len(self.running)
        stats = self.policy.stats()
        assert sum(t.queued for t in stats.tenants.values()) == len(self.queued)
        assert sum(t.in_flight for t in stats.tenants.values()) == len(self.running)
        assert sum(w.in_flight for w in stats.workers.values()) == len(self.running)
        assert sum(b.queued for b in stats.bands.values()) == len(self.queued)
        assert not (self.queued & set(self.running))
        assert not (self.gone & (self.queued | set(self.running)))


class FifoMachine(PolicyMachine):
    policy_name = "fifo"
    banded = False


class RoundRobinMachine(PolicyMachine):
    policy_name = "round-robin"
    banded = False


class StrictPriorityMachine(PolicyMachine):
    policy_name = "strict-priority"


_SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None)

TestTidegate = PolicyMachine.TestCase
TestTidegate.settings = _SETTINGS
TestFifo = FifoMachine.TestCase
TestFifo.settings = _SETTINGS
TestRoundRobin = RoundRobinMachine.TestCase
TestRoundRobin.settings = _SETTINGS
TestStrictPriority = StrictPriorityMachine.TestCase
TestStrictPriority.settings = _SETTINGS


# ------------------------------------------------------------------ share bound


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(st.integers(1, 8), min_size=2, max_size=5),
    seed=st.integers(0, 2**32 - 1),
    exact=st.booleans(),
)
def test_vtc_keeps_backlogged_tenants_within_the_share_bound(
    weights: list[int], seed: int, exact: bool
) -> None:
    """With every tenant backlogged, weight-normalised service of any two
    tenants differs by at most U = max(real cost / weight) <= the largest
    request's cost, at every step, even when estimates are wrong."""
    rng = random.Random(seed)
    names = [f"t{index}" for index in range(len(weights))]
    config = SchedulerConfig(
        tenants=MappingProxyType(
            {n: TenantConfig(n, weight=float(w)) for n, w in zip(names, weights, strict=True)}
        ),
        window=WindowConfig(initial=1, minimum=1, maximum=1),
    )
    policy = create_policy("tidegate", config, rng)
    policy.add_worker("w", 0.0)
    steps = 120
    real: dict[str, tuple[int, int]] = {}
    for index in range(steps + 1):
        for name in names:
            rid = f"{name}-{index}"
            real[rid] = (rng.randint(0, 300), rng.randint(1, 300))
            estimate = real[rid][1] if exact else rng.randint(1, 300)
            assert isinstance(
                policy.submit(Request(rid, name, 0, real[rid][0], estimate), 0.0), Admitted
            )
    weight = dict(zip(names, weights, strict=True))
    served = dict.fromkeys(names, 0.0)
    bound = 0.0
    largest = 0.0
    for _ in range(steps):
        [decision] = policy.dispatch(0.0)
        rid = decision.request.request_id
        tenant = decision.request.tenant
        input_tokens, output_tokens = real[rid]
        policy.complete(rid, input_tokens, output_tokens, 0.0)
        cost = input_tokens + 2.0 * output_tokens
        served[tenant] += cost
        largest = max(largest, cost)
        bound = max(bound, cost / weight[tenant])
        normalised = [served[n] / weight[n] for n in names]
        assert max(normalised) - min(normalised) <= bound + 1e-6
        assert bound <= largest  # so also within the 2 x the largest request cost
