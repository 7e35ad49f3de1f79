"""The scheduler's metrics come from one stats snapshot, under the published names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from scheduler import metrics
from scheduler.metrics import SchedulerCollector
from scheduler.runtime import SubmitSpec
from tests.unit.runtime.support import FakeWorker, make_runtime, run, settle


def test_the_collector_exports_tenants_workers_and_events() -> None:
    async def body() -> str:
        runtime, _, _ = make_runtime()
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"hello")
        await runtime.submit("acme", SubmitSpec(), b"world")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        grant = await worker.grant()
        worker.complete(grant, output_tokens=7, credits=0)
        await settle()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SchedulerCollector(runtime.stats))
        text = generate_latest(registry).decode()
        await runtime.stop()
        return text

    text = run(body)
    assert f'{metrics.QUEUED}{{tenant="acme"}} 1.0' in text
    assert f'{metrics.COMPLETED}_total{{tenant="acme"}} 1.0' in text
    assert f'{metrics.SERVED_TOKENS}_total{{kind="output",tenant="acme"}} 7.0' in text
    assert f'{metrics.EVENTS}_total{{event="submitted"}} 2.0' in text
    assert f"{metrics.WORKERS} 1.0" in text
    assert metrics.WORKER_WINDOW in text
    for name in metrics.__all__:
        value = getattr(metrics, name)
        if isinstance(value, str):
            assert value.startswith("tidegate_scheduler_")
