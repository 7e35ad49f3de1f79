"""The per-worker AIMD window, alone and as dispatch sees it."""

from __future__ import annotations

import random

import pytest

from scheduler.policy import create_policy
from scheduler.policy.window import AimdWindow
from scheduler.types import WindowConfig, WorkerFeedback

from .support import admit, config, req, tenant

WINDOW = WindowConfig(
    initial=10,
    minimum=2,
    maximum=12,
    increase=1.0,
    decrease=0.5,
    target_ttft_s=1.0,
    target_tpot_s=0.1,
    max_queue_depth=4,
    max_kv_usage=0.9,
    max_gpu_mem=0.95,
    adjust_interval_s=0.0,
    slow_start=False,  # the additive regime; slow start has its own tests below
)


@pytest.mark.parametrize(
    "signal",
    [
        WorkerFeedback(ttft_s=1.5),
        WorkerFeedback(tpot_s=0.2),
        WorkerFeedback(queue_depth=5),
        WorkerFeedback(kv_usage=0.95),
        WorkerFeedback(gpu_mem=0.99),
    ],
    ids=["ttft", "tpot", "queue_depth", "kv_usage", "gpu_mem"],
)
def test_each_saturation_signal_shrinks_multiplicatively(signal: WorkerFeedback) -> None:
    window = AimdWindow(WINDOW)
    assert window.observe(signal, in_flight=10, dispatched=10, now=0.0)
    assert (window.limit, window.decreases) == (5, 1)
    window.heard_from(11)  # a request started under the smaller window still suffers
    window.observe(signal, in_flight=5, dispatched=11, now=1.0)
    assert window.limit == 2  # 2.5 rounds down
    window.heard_from(12)
    window.observe(signal, in_flight=2, dispatched=12, now=2.0)
    assert window.limit == 2  # never below the minimum
    assert window.value == 2.0


def test_after_a_cut_lagging_reports_do_not_cut_again() -> None:
    window = AimdWindow(WINDOW)
    hot = WorkerFeedback(ttft_s=3.0, queue_depth=9)
    window.observe(hot, in_flight=10, dispatched=100, now=0.0)
    assert window.limit == 5
    # The 10 requests started before the cut still report the old overload.
    for step in range(1, 6):
        window.heard_from(95 + step)
        assert not window.observe(hot, in_flight=10 - step, dispatched=100, now=float(step))
    assert window.limit == 5
    # The first request dispatched after the cut reports: its word counts.
    window.heard_from(101)
    window.observe(hot, in_flight=5, dispatched=101, now=7.0)
    assert window.limit == 2


def test_high_gpu_utilisation_alone_is_not_saturation() -> None:
    window = AimdWindow(WINDOW)
    busy_but_fast = WorkerFeedback(ttft_s=0.2, tpot_s=0.02, gpu_util=1.0, kv_usage=0.5)
    window.observe(busy_but_fast, in_flight=10, dispatched=10, now=0.0)
    assert window.limit == 11  # grows: high utilisation is the goal


def test_busy_and_close_to_target_holds_the_window() -> None:
    window = AimdWindow(WINDOW)
    window.observe(WorkerFeedback(ttft_s=0.9, gpu_util=0.97), in_flight=10, dispatched=10, now=0.0)
    assert (window.limit, window.increases, window.decreases) == (10, 0, 0)
    # Close to target but the GPU has room: growing is still worth a try.
    window.observe(WorkerFeedback(ttft_s=0.9, gpu_util=0.5), in_flight=10, dispatched=10, now=1.0)
    assert window.limit == 11


@pytest.mark.parametrize(
    "near",
    [WorkerFeedback(queue_depth=4), WorkerFeedback(kv_usage=0.8), WorkerFeedback(gpu_mem=0.9)],
    ids=["queue_depth", "kv_usage", "gpu_mem"],
)
def test_close_to_an_engine_limit_holds_the_window(near: WorkerFeedback) -> None:
    window = AimdWindow(WINDOW)
    assert not window.observe(near, in_flight=10, dispatched=10, now=0.0)
    assert (window.limit, window.increases, window.decreases) == (10, 0, 0)


def test_grows_only_when_the_window_is_used() -> None:
    window = AimdWindow(WINDOW)
    good = WorkerFeedback(ttft_s=0.1)
    assert not window.observe(good, in_flight=3, dispatched=3, now=0.0)
    assert window.limit == 10
    window.observe(good, in_flight=10, dispatched=10, now=1.0)
    window.observe(good, in_flight=11, dispatched=11, now=2.0)
    window.observe(good, in_flight=12, dispatched=12, now=3.0)
    assert window.limit == 12  # capped at the maximum
    assert window.increases == 2


def test_one_overload_shrinks_once_per_interval() -> None:
    window = AimdWindow(
        WindowConfig(initial=16, minimum=1, maximum=64, decrease=0.5, adjust_interval_s=1.0)
    )
    hot = WorkerFeedback(ttft_s=9.0)
    window.observe(hot, in_flight=16, dispatched=16, now=10.0)
    window.heard_from(17)  # recovery over at once: only the interval limits now
    for step in range(9):
        window.observe(hot, in_flight=16, dispatched=17, now=10.0 + 0.1 * step)
    assert window.limit == 8
    window.observe(hot, in_flight=16, dispatched=17, now=11.0)
    assert window.limit == 4


def test_reconfigure_keeps_the_learned_value_within_new_bounds() -> None:
    window = AimdWindow(WINDOW)
    window.observe(WorkerFeedback(ttft_s=0.1), in_flight=10, dispatched=10, now=0.0)
    window.reconfigure(WindowConfig(initial=4, minimum=1, maximum=6))
    assert window.limit == 6
    window.reconfigure(WindowConfig(initial=4, minimum=1, maximum=100))
    assert window.limit == 6


def test_scripted_saturation_shrinks_dispatch_and_recovery_grows_it_back() -> None:
    cfg = config(tenant("a"), window=WINDOW)
    p = create_policy("tidegate", cfg, random.Random(0))
    p.add_worker("w0", 0.0)
    admit(p, *(req(f"r{i}", "a") for i in range(200)))
    running = [d.request.request_id for d in p.dispatch(0.0)]
    assert len(running) == 10
    now = 0.0
    # The engine reports an inflating time to first token while the window is full.
    limits = []
    for _ in range(4):
        now += 1.0
        p.feedback("w0", WorkerFeedback(ttft_s=3.0, gpu_util=1.0), now)
        limits.append(p.stats().workers["w0"].window)
        # Finish everything, then refill: dispatch must honour the new window,
        # and the new requests' first tokens end the recovery from the cut.
        for rid in running:
            p.complete(rid, 10, 10, now)
        running = [d.request.request_id for d in p.dispatch(now)]
        assert len(running) == limits[-1]
        for rid in running:
            p.first_token(rid, now)
    assert limits == [5, 2, 2, 2]
    # Latency back under target with the window in use: +1 per report, back to 10.
    while p.stats().workers["w0"].window < 10:
        now += 1.0
        before = p.stats().workers["w0"].window
        p.feedback("w0", WorkerFeedback(ttft_s=0.3, tpot_s=0.02, gpu_util=0.99), now)
        assert p.stats().workers["w0"].window == before + 1
        for rid in running:
            p.complete(rid, 10, 10, now)
        running = [d.request.request_id for d in p.dispatch(now)]
        assert len(running) == before + 1
    stats = p.stats().workers["w0"]
    assert (stats.decreases, stats.increases) == (3, 8)  # 10 -> 5 -> 2.5 -> 2 (the floor)


def test_only_requests_started_after_a_cut_end_its_recovery() -> None:
    cfg = config(tenant("a"), window=WINDOW)
    p = create_policy("tidegate", cfg, random.Random(0))
    p.add_worker("w0", 0.0)
    admit(p, *(req(f"r{i}", "a") for i in range(30)))
    before_cut = [d.request.request_id for d in p.dispatch(0.0)]
    hot = WorkerFeedback(queue_depth=9)
    p.feedback("w0", hot, 1.0)
    assert p.stats().workers["w0"].window == 5
    # Old requests finishing say nothing about the new window.
    for rid in before_cut[:6]:
        p.first_token(rid, 1.5)
        p.complete(rid, 10, 10, 1.5)
    p.feedback("w0", hot, 2.0)
    assert p.stats().workers["w0"].window == 5
    for rid in before_cut[6:]:
        p.complete(rid, 10, 10, 2.5)
    [after_cut, *_] = p.dispatch(2.5)
    p.complete(after_cut.request.request_id, 10, 10, 3.0)  # no first_token report: completion does
    p.feedback("w0", hot, 3.0)
    assert p.stats().workers["w0"].window == 2


# ---------------------------------------------------------------- delay-based cuts

DEFAULTS = WindowConfig(initial=68, adjust_interval_s=0.0)  # decrease 0.7, max_queue_depth 4


def test_engine_queueing_cuts_to_what_the_engine_runs_not_by_a_factor() -> None:
    # A full batch of 64 plus 5 waiting in the engine: the 5 buy nothing.
    window = AimdWindow(DEFAULTS)
    assert window.observe(WorkerFeedback(queue_depth=5), in_flight=69, dispatched=69, now=0.0)
    assert (window.limit, window.decreases) == (64, 1)  # not 0.7 x 68 = 47


def test_late_first_tokens_behind_an_engine_queue_cut_the_queue_only() -> None:
    window = AimdWindow(DEFAULTS)
    late = WorkerFeedback(ttft_s=1.5, queue_depth=4, gpu_util=1.0)
    window.observe(late, in_flight=68, dispatched=68, now=0.0)
    assert window.limit == 64
    # Still late once the engine queue is gone: now the batch itself shrinks.
    window.heard_from(69)
    window.observe(WorkerFeedback(ttft_s=1.5, queue_depth=0), in_flight=64, dispatched=70, now=1.0)
    assert window.limit == 44  # 0.7 x 64


def test_a_too_big_batch_is_cut_multiplicatively_whatever_the_queue() -> None:
    for signal in (
        WorkerFeedback(tpot_s=0.2, queue_depth=2),
        WorkerFeedback(kv_usage=0.95, queue_depth=2),
        WorkerFeedback(gpu_mem=0.99, queue_depth=2),
    ):
        window = AimdWindow(DEFAULTS)
        window.observe(signal, in_flight=68, dispatched=68, now=0.0)
        assert window.limit == 47, signal  # 0.7 x 68: these say the batch is too big


def test_latency_cuts_are_relative_to_what_the_worker_holds() -> None:
    window = AimdWindow(DEFAULTS)
    # The window is 68 but only 60 are in flight: cutting 68 would barely bite.
    window.observe(WorkerFeedback(ttft_s=2.0), in_flight=60, dispatched=60, now=0.0)
    assert window.limit == 42  # 0.7 x 60
    # A report that finds the worker nearly idle cuts at most two steps' worth.
    window = AimdWindow(DEFAULTS)
    window.observe(WorkerFeedback(ttft_s=2.0), in_flight=0, dispatched=60, now=0.0)
    assert window.limit == 33  # 0.7 x 0.7 x 68 = 33.3, not the minimum


def test_any_engine_queue_holds_the_window() -> None:
    # Vegas: one request waiting in the engine is the ready spare; more is delay.
    window = AimdWindow(DEFAULTS)
    one_waiting = WorkerFeedback(ttft_s=0.2, queue_depth=1, gpu_util=1.0)
    assert not window.observe(one_waiting, in_flight=68, dispatched=68, now=0.0)
    none_waiting = WorkerFeedback(ttft_s=0.2, queue_depth=0, gpu_util=1.0)
    assert window.observe(none_waiting, in_flight=68, dispatched=68, now=1.0)
    assert window.limit == 69


def test_slow_start_doubles_until_the_first_cut_then_grows_by_one() -> None:
    config = WindowConfig(initial=4, minimum=1, maximum=256, decrease=0.5, adjust_interval_s=0.0)
    window = AimdWindow(config)
    good = WorkerFeedback(ttft_s=0.1, tpot_s=0.01, queue_depth=0, kv_usage=0.1)
    limits = []
    for step in range(4):
        window.observe(good, in_flight=window.limit, dispatched=step, now=float(step))
        limits.append(window.limit)
    assert limits == [8, 16, 32, 64]
    window.observe(WorkerFeedback(tpot_s=0.5), in_flight=64, dispatched=10, now=10.0)
    assert window.limit == 32
    assert not window.slow_start
    window.heard_from(11)  # a request sent inside the new window reported: recovered
    window.observe(good, in_flight=40, dispatched=12, now=11.0)  # drained back inside
    window.observe(good, in_flight=32, dispatched=13, now=12.0)
    assert window.limit == 33  # additive from now on


def test_slow_start_ends_where_a_report_holds_the_window_near_a_limit() -> None:
    config = WindowConfig(initial=8, maximum=256, adjust_interval_s=0.0)
    window = AimdWindow(config)
    good = WorkerFeedback(queue_depth=0, kv_usage=0.1)
    window.observe(good, in_flight=8, dispatched=8, now=0.0)
    assert window.limit == 16
    near = WorkerFeedback(queue_depth=0, kv_usage=0.85)  # >= near_target x max_kv_usage
    assert not window.observe(near, in_flight=16, dispatched=16, now=1.0)
    assert window.limit == 16
    window.observe(good, in_flight=16, dispatched=17, now=2.0)
    assert window.limit == 17  # additive once held
    # Slow start never passes the maximum.
    capped = AimdWindow(WindowConfig(initial=100, maximum=150, adjust_interval_s=0.0))
    capped.observe(good, in_flight=100, dispatched=1, now=0.0)
    assert capped.limit == 150


def test_slow_start_waits_for_a_used_window_like_additive_growth() -> None:
    window = AimdWindow(WindowConfig(initial=8, adjust_interval_s=0.0))
    good = WorkerFeedback(queue_depth=0, kv_usage=0.1)
    assert not window.observe(good, in_flight=3, dispatched=3, now=0.0)
    assert window.limit == 8
    assert window.slow_start
