"""Feedback reports: measured latency, readings and signals -> WorkerFeedback,
and the scheduler's window following a scripted GPU through saturation."""

from __future__ import annotations

import itertools
import random
from types import MappingProxyType

import pytest

from scheduler.clock import VirtualClock
from scheduler.policy import create_policy
from scheduler.types import Request, SchedulerConfig, TenantConfig, WindowConfig, WorkerFeedback
from workers.engine_metrics import EngineSignals
from workers.feedback import LatencySummary, LatencyTracker, build_feedback
from workers.probe import GpuReading, ProbeSampler, ScriptedProbe


def test_the_tracker_measures_first_token_and_per_token_times() -> None:
    tracker = LatencyTracker()
    tracker.started("a", 0.0)
    tracker.started("b", 0.2)
    tracker.chunk("a", 1, 0.5)  # ttft 0.5
    tracker.chunk("b", 3, 0.5)  # ttft 0.3; its extra tokens came with the first
    tracker.chunk("a", 2, 0.7)  # 0.2 s for 2 tokens
    tracker.chunk("b", 1, 0.8)  # 0.3 s for 1 token
    tracker.chunk("ghost", 1, 0.8)  # never started here: ignored
    summary = tracker.summary(1.0)
    assert summary.ttft_s == pytest.approx(0.4)
    assert summary.tpot_s == pytest.approx(0.5 / 3)
    assert (summary.first_tokens, summary.tokens) == (2, 3)
    # A new interval: nothing measured yet.
    assert tracker.summary(1.1) == LatencySummary()


def test_a_request_still_waiting_for_its_first_token_counts_as_late() -> None:
    tracker = LatencyTracker()
    tracker.started("slow", 0.0)
    tracker.started("quick", 2.5)
    tracker.chunk("quick", 1, 2.6)
    # quick's 0.1 s is all that was measured, but slow has waited 3 s already.
    assert tracker.summary(3.0).ttft_s == pytest.approx(3.0)
    tracker.finished("slow")
    assert tracker.active == 1
    assert tracker.summary(4.0).ttft_s is None


def test_build_feedback_takes_the_busiest_device_and_the_engine_signals() -> None:
    readings = [
        GpuReading(0, 1.0, utilisation=0.5, memory_used=0.9),
        GpuReading(1, 1.0, utilisation=0.8, memory_used=None),
    ]
    feedback = build_feedback(
        readings, EngineSignals(queue_depth=3, kv_usage=0.7), LatencySummary(0.25, 0.02)
    )
    assert feedback == WorkerFeedback(
        ttft_s=0.25, tpot_s=0.02, queue_depth=3, kv_usage=0.7, gpu_util=0.8, gpu_mem=0.9
    )
    assert build_feedback() == WorkerFeedback()


WINDOW = WindowConfig(
    initial=8,
    minimum=2,
    maximum=24,
    increase=1.0,
    decrease=0.5,
    target_ttft_s=1.0,
    target_tpot_s=0.1,
    max_gpu_mem=0.95,
    adjust_interval_s=0.25,
    slow_start=False,  # one step per report, so every report's growth shows
)
CALM = GpuReading(0, 0.0, utilisation=0.6, memory_used=0.5)
FULL = GpuReading(0, 0.0, utilisation=1.0, memory_used=0.99)  # memory over max_gpu_mem


def test_the_window_shrinks_under_scripted_saturation_and_grows_back() -> None:
    """A worker loop in miniature: the probe sampler reads a scripted GPU every
    0.5 s; each report (readings + engine signals + measured latency) goes to
    the scheduler, and the worker keeps its window full, finishing requests
    as it goes. Memory above the limit cuts the window; calm grows it back.
    Latency and engine signals stay fine throughout: the GPU alone decides."""
    clock = VirtualClock()
    script = [CALM] * 6 + [FULL] * 4 + [CALM] * 14
    sampler = ProbeSampler(ScriptedProbe(script), clock, interval_s=0.5)
    tenants = MappingProxyType({"acme": TenantConfig("acme")})
    policy = create_policy(
        "tidegate", SchedulerConfig(tenants=tenants, window=WINDOW), random.Random(0)
    )
    policy.add_worker("w0", 0.0)
    for i in range(1000):
        policy.submit(Request(f"r{i}", "acme", input_tokens=50, output_tokens=20), 0.0)

    running: list[str] = []
    windows: list[int] = []
    for _ in range(len(script)):
        now = clock.now()
        for rid in running[:2]:  # the engine finishes a couple of requests per interval
            policy.complete(rid, 50, 20, now)
        del running[:2]
        running += [d.request.request_id for d in policy.dispatch(now, "w0")]
        for rid in running:
            policy.first_token(rid, now)
        readings = sampler.sample()
        latency = LatencySummary(ttft_s=0.2, tpot_s=0.02)  # well inside the targets
        signals = EngineSignals(queue_depth=0, kv_usage=0.3)
        policy.feedback("w0", build_feedback(readings, signals, latency), now)
        windows.append(policy.stats().workers["w0"].window)
        clock.advance(sampler.interval_s)

    calm, saturated, recovered = windows[:6], windows[6:10], windows[10:]
    # Calm and full: it grows.
    assert all(b > a for a, b in itertools.pairwise(calm))
    assert calm[-1] > WINDOW.initial
    # Memory over the limit: cut at least multiplicatively, and no growth
    # while the GPU stays full.
    assert max(saturated) <= calm[-1] * WINDOW.decrease
    assert min(saturated) >= WINDOW.minimum
    # Calm again: it grows back, report after report, past where it was.
    assert all(b > a for a, b in itertools.pairwise(recovered))
    assert recovered[-1] > calm[-1]
