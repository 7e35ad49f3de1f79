"""Paced reduction: a worker cut below what it holds keeps dispatching while it shrinks."""

from __future__ import annotations

import random

from scheduler.policy import Policy, create_policy
from scheduler.policy.drain import Drain
from scheduler.types import WindowConfig, WorkerFeedback

from .support import admit, config, ids, req, tenant

HALVING = WindowConfig(initial=10, minimum=1, maximum=10, decrease=0.5, adjust_interval_s=0.0)
HOT = WorkerFeedback(ttft_s=3.0)


def _fleet(workers: int, queued: int, window: WindowConfig = HALVING) -> tuple[Policy, list[str]]:
    p = create_policy("tidegate", config(tenant("a"), window=window), random.Random(0))
    for index in range(workers):
        p.add_worker(f"w{index}", 0.0)
    admit(p, *(req(f"r{i:03d}", "a") for i in range(queued)))
    return p, ids(p.dispatch(0.0))


def _running_on(p: Policy, worker: str, running: dict[str, str]) -> list[str]:
    return [rid for rid, w in running.items() if w == worker]


def test_earned_slots_round_up_and_come_every_second_release() -> None:
    drain = Drain()
    drain.begin(in_flight=10, limit=5)
    earned = []
    for _ in range(10):
        drain.released += 1
        earned.append(drain.earned(5))
    assert earned == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # A cut deeper than half paces at window / in-flight instead.
    drain.begin(in_flight=10, limit=2)
    drain.released = 5
    assert drain.earned(2) == 1
    drain.begin(in_flight=4, limit=4)
    assert not drain.active


def test_workers_that_all_cut_at_once_keep_dispatching_while_they_shrink() -> None:
    p, first = _fleet(workers=4, queued=200)
    assert all(w.in_flight == 10 for w in p.stats().workers.values())
    holding: dict[str, list[str]] = {f"w{i}": [] for i in range(4)}
    for index, rid in enumerate(first):
        holding[f"w{index % 4}"].append(rid)  # equal windows fill round-robin
    assert all(p.stats().workers[w].in_flight == len(rids) for w, rids in holding.items())
    # The same overload reaches every worker at the same report.
    for worker in holding:
        p.feedback(worker, HOT, 1.0)
    assert all(w.window == 5 for w in p.stats().workers.values())
    per_round: list[int] = []
    in_flight = [10]
    while in_flight[-1] > 5:
        for rids in holding.values():  # one request finishes on every worker
            p.complete(rids.pop(0), 10, 10, 2.0)
        got = p.dispatch(2.0)
        per_round.append(len(got))
        for decision in got:
            holding[decision.worker_id].append(decision.request.request_id)
        sizes = {w.in_flight for w in p.stats().workers.values()}
        assert len(sizes) == 1
        in_flight.append(sizes.pop())
    # A blocking reduction would dispatch nothing for 5 rounds. Paced, every
    # worker takes a request at every second release ...
    assert per_round == [4, 0, 4, 0, 4, 0, 4, 0, 0]
    # ... and in-flight falls steadily to the window within 2 x the excess.
    assert in_flight == [10, 10, 9, 9, 8, 8, 7, 7, 6, 5]
    # Back inside the window: one out, one in.
    for rids in holding.values():
        p.complete(rids.pop(0), 10, 10, 3.0)
    assert len(p.dispatch(3.0)) == 4
    assert all(w.in_flight == 5 for w in p.stats().workers.values())


def test_requests_dispatched_while_draining_do_not_end_the_recovery() -> None:
    p, first = _fleet(workers=1, queued=50)
    p.feedback("w0", HOT, 1.0)
    assert p.stats().workers["w0"].window == 5
    holding = list(first)
    during: list[str] = []
    while p.stats().workers["w0"].in_flight > 5:
        p.complete(holding.pop(0), 10, 10, 2.0)
        during += ids(p.dispatch(2.0))
    assert during  # the drain dispatched
    holding += during
    # They run while the worker still holds more than its window: their
    # first tokens say nothing about the new window.
    for rid in during:
        p.first_token(rid, 2.5)
    p.feedback("w0", HOT, 3.0)
    assert p.stats().workers["w0"].window == 5
    # The first request started inside the new window speaks for it.
    p.complete(holding.pop(0), 10, 10, 3.5)
    [after] = ids(p.dispatch(3.5))
    p.first_token(after, 4.0)
    p.feedback("w0", HOT, 4.0)
    assert p.stats().workers["w0"].window == 2


def test_good_reports_while_draining_grow_the_window_back() -> None:
    p, _ = _fleet(workers=1, queued=50)
    p.feedback("w0", HOT, 1.0)
    assert p.stats().workers["w0"].window == 5
    # Holding 10 over a window of 5, the engine is fine: the cut overshot.
    p.feedback("w0", WorkerFeedback(ttft_s=0.1, queue_depth=0, gpu_util=0.5), 2.0)
    assert p.stats().workers["w0"].window == 6


def test_a_hot_reload_that_shrinks_the_window_drains_at_the_paced_rate() -> None:
    p, first = _fleet(workers=1, queued=50)
    smaller = WindowConfig(initial=4, minimum=1, maximum=4, adjust_interval_s=0.0)
    p.update_config(config(tenant("a"), window=smaller), 1.0)
    assert p.stats().workers["w0"].window == 4
    taken = []
    for rid in first[:6]:
        p.complete(rid, 10, 10, 2.0)
        taken.append(len(p.dispatch(2.0)))
    # 10 -> 4 is deeper than half: a slot per 10 / 4 releases, the first at once.
    assert taken == [1, 0, 1, 0, 0, 1]
    assert p.stats().workers["w0"].in_flight == 7
