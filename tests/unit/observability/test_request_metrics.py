"""Waits, first tokens and per-worker counts from the runtime's hooks (virtual times)."""

from __future__ import annotations

from scheduler.request_metrics import OTHER, RequestMetrics, worker_label
from scheduler.runtime.observer import RequeueCause
from scheduler.types import Request, WorkerFeedback

KEY = "fleet/gpu-0#3"


def _request(rid: str, tenant: str = "acme", priority: int = 0, at: float = 10.0) -> Request:
    return Request(rid, tenant, priority, 10, 10, at)


def test_the_label_of_a_worker_is_its_tenant_and_id_not_its_stream() -> None:
    assert worker_label("fleet/gpu-0#3") == "fleet/gpu-0"
    assert worker_label("fleet/gpu-0#17") == "fleet/gpu-0"
    assert worker_label("plain") == "plain"


def test_each_queue_stint_is_one_wait_and_a_preemption_counts_for_its_band() -> None:
    metrics = RequestMetrics()
    request = _request("r1", priority=2, at=10.0)
    metrics.admitted(request, {}, 10.001)
    metrics.granted(request, KEY, 1, 10.5)  # waited 0.5 s
    metrics.first_token(request.request_id, KEY, 10.75)  # 0.75 s after admission
    metrics.requeued(request.request_id, KEY, RequeueCause.PREEMPTED, 11.0)
    metrics.granted(request, KEY, 2, 13.0)  # waited 2 s more
    metrics.first_token(request.request_id, KEY, 13.1)  # a resumed run's: not counted
    metrics.finished(request.request_id, "completed", 14.0)

    figures = metrics.snapshot()
    waits = figures.tenant_waits["acme"]
    assert waits.count == 2
    assert waits.total == 2.5
    bounds = list(waits.bounds)
    assert waits.cumulative[bounds.index(0.5)] == 1  # le="0.5" holds the 0.5 s wait
    assert waits.cumulative[bounds.index(2.5)] == 2
    assert figures.band_waits["2"].count == 2
    assert figures.tenant_ttft["acme"].count == 1
    assert figures.tenant_ttft["acme"].total == 0.75
    assert figures.band_preemptions == {"2": 1}
    assert figures.worker_lease_expiries == {"fleet/gpu-0": 0}
    assert metrics.live == 0


def test_lease_expiries_tokens_and_feedback_are_per_worker() -> None:
    metrics = RequestMetrics()
    request = _request("r1")
    metrics.admitted(request, {}, 10.0)
    metrics.granted(request, "fleet/gpu-0#1", 1, 10.0)
    metrics.tokens("fleet/gpu-0#1", 7)
    metrics.requeued("r1", "fleet/gpu-0#1", RequeueCause.LEASE_EXPIRED, 12.0)
    metrics.granted(request, "fleet/gpu-1#2", 2, 12.5)
    metrics.tokens("fleet/gpu-1#2", 5)
    metrics.tokens("fleet/gpu-1#2", 5)
    metrics.feedback("fleet/gpu-1#2", WorkerFeedback(gpu_util=0.5, gpu_mem=0.25), 12.6)
    figures = metrics.snapshot()
    assert figures.worker_tokens == {"fleet/gpu-0": 7, "fleet/gpu-1": 10}
    assert figures.worker_lease_expiries == {"fleet/gpu-0": 1, "fleet/gpu-1": 0}
    assert figures.worker_feedback["fleet/gpu-1"].gpu_mem == 0.25
    assert figures.band_preemptions == {"0": 0}
    assert figures.tenant_waits["acme"].count == 2


def test_labels_past_the_caps_are_other() -> None:
    metrics = RequestMetrics(max_workers=2, max_bands=2)
    for i in range(4):
        metrics.tokens(f"fleet/w{i}#1", 1)
        metrics.admitted(_request(f"r{i}", priority=i), {}, 10.0)
    figures = metrics.snapshot()
    assert figures.worker_tokens == {"fleet/w0": 1, "fleet/w1": 1, OTHER: 2}
    assert set(figures.band_preemptions) == {"0", "1", OTHER}


def test_a_request_restored_after_a_restart_is_measured_from_its_arrival() -> None:
    metrics = RequestMetrics()
    metrics.granted(_request("old", at=3.0), KEY, 1, 5.0)  # never seen admitted
    assert metrics.snapshot().tenant_waits["acme"].total == 2.0
    metrics.finished("old", "completed", 6.0)
    metrics.finished("never-seen", "cancelled", 6.0)
    assert metrics.live == 0
