"""What a scrape of the scheduler and the broker exposes, under the published names."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker import Broker, BrokerSettings
from broker import metric_names as bn
from broker.hub import Hub
from broker.log.commitlog import FsyncPolicy
from broker.metrics import BrokerCollector, Buckets, FsyncTimer, on_loop
from broker.subscriptions import Engine
from broker.tenancy import Quotas, TenantLimits
from dashboards.metric_names import by_name
from scheduler import metric_names as sn
from scheduler.metrics import SchedulerTelemetry
from scheduler.runtime import SubmitSpec, WorkerInput
from scheduler.types import WorkerFeedback
from tests.unit.runtime.support import FakeWorker, advance, make_runtime, run, settle


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_a_scrape_holds_waits_first_tokens_workers_and_fairness() -> None:
    async def body() -> str:
        runtime, _, clock = make_runtime()
        telemetry = SchedulerTelemetry(sample_s=1.0)
        runtime.core.observer = telemetry.observer
        await runtime.start()
        sampler = asyncio.create_task(telemetry.sample(runtime.stats, clock))
        for _ in range(3):
            await runtime.submit("acme", SubmitSpec(output_tokens=5), b"hello")
            await runtime.submit("beta", SubmitSpec(output_tokens=5), b"hello")
        await advance(clock, 0.5)
        worker = FakeWorker(runtime, "gpu-0")
        worker.send(WorkerInput(feedback=WorkerFeedback(gpu_util=0.75, kv_usage=0.5)))
        worker.credit(2)
        for _ in range(2):
            grant = await worker.grant()
            worker.chunks(grant, b"a")
            await advance(clock, 0.25)
            worker.complete(grant, output_tokens=5, credits=0)
            await settle()
        await advance(clock, 2.0)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(telemetry.collector(runtime.stats))
        text = generate_latest(registry).decode()
        sampler.cancel()
        worker.close()
        await runtime.stop()
        return text

    samples = _samples(run(body))
    assert _value(samples, sn.TENANT_SUBMITTED.total, tenant="acme") == 3
    assert _value(samples, sn.TENANT_REFUSED.total, tenant="acme", reason="rate_requests") == 0
    assert _value(samples, sn.TENANT_DROPPED.total, tenant="beta", reason="deadline") == 0
    assert (
        _value(samples, sn.TENANT_WAIT.count, tenant="acme")
        + _value(samples, sn.TENANT_WAIT.count, tenant="beta")
        == 2
    )
    assert _value(samples, sn.BAND_WAIT.count, band="0") == 2
    assert _value(samples, sn.BAND_PREEMPTIONS.total, band="0") == 0
    worker = "fleet/gpu-0"
    assert _value(samples, sn.WORKER_GPU_UTILIZATION.name, worker=worker) == 0.75
    assert _value(samples, sn.WORKER_KV_USAGE.name, worker=worker) == 0.5
    assert (sn.WORKER_GPU_MEMORY.name, frozenset({("worker", worker)})) not in samples  # unknown
    assert _value(samples, sn.WORKER_LEASE_EXPIRIES.total, worker=worker) == 0
    assert _value(samples, sn.WORKER_IN_FLIGHT.name, worker=worker) == 0
    assert _value(samples, sn.FAIRNESS_BACKLOGGED.name) == 2  # both waited
    served = sum(v for (name, _), v in samples.items() if name == sn.TENANT_SERVICE_SHARE.name)
    assert served == pytest.approx(1.0)
    jain = _value(samples, sn.FAIRNESS_JAIN.name)
    assert 0.5 <= jain <= 1.0
    for name, _ in samples:
        family = by_name(name) or by_name(name.removesuffix("_created"))
        assert family is not None, f"{name} is in neither broker nor scheduler metric_names"


def test_two_streams_of_one_worker_are_one_series() -> None:
    async def body() -> str:
        runtime, _, _ = make_runtime()
        telemetry = SchedulerTelemetry()
        runtime.core.observer = telemetry.observer
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"x")
        first = FakeWorker(runtime, "gpu-0")
        first.credit(1)
        await first.grant()  # it holds a lease, so its session drains after the replacement
        FakeWorker(runtime, "gpu-0")  # reconnects: a new stream, same worker
        await settle()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(telemetry.collector(runtime.stats))
        text = generate_latest(registry).decode()
        await runtime.stop()
        return text

    text = run(body)
    lines = [line for line in text.splitlines() if line.startswith(sn.WORKER_WINDOW.name)]
    assert len(lines) == 1, lines  # the two streams' windows add up under one label
    samples = _samples(text)
    assert _value(samples, sn.WORKER_LEASE_EXPIRIES.total, worker="fleet/gpu-0") == 1


def test_on_loop_runs_on_the_loop_s_thread_and_gives_up_on_a_blocked_loop() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="the-loop")
    thread.start()
    try:
        assert on_loop(loop, lambda: threading.current_thread().name) == "the-loop"
        loop.call_soon_threadsafe(time.sleep, 0.3)  # a loop stuck in a blocking call
        with pytest.raises(TimeoutError, match="did not answer a scrape"):
            on_loop(loop, lambda: "late", timeout_s=0.05)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert on_loop(None, lambda: 5) == 5  # no loop: run here
    assert on_loop(loop, lambda: 6) == 6  # a loop that is not running: run here


def test_the_fsync_timer_times_every_fsync_of_the_log(tmp_path: Path) -> None:
    ticks = iter(float(i) * 0.002 for i in range(10_000))
    timer = FsyncTimer(clock=lambda: next(ticks))
    with Broker.open(
        tmp_path / "store", BrokerSettings(fsync=FsyncPolicy.ALWAYS), fsync=timer
    ) as broker:
        before = timer.buckets.snapshot().count
        broker.publish("events", b"one")
        assert timer.buckets.snapshot().count > before
        fsyncs = broker.stats().counters["log_fsyncs"]
    snap = timer.buckets.snapshot()
    assert snap.count >= fsyncs  # segment fsyncs, and the directory's
    assert snap.total == pytest.approx(0.002 * snap.count)
    text = _registry_text(timer)
    assert f"{bn.BROKER_FSYNC_SECONDS.count} {float(snap.count)}" in text


def test_buckets_count_a_value_on_a_bound_in_that_bound() -> None:
    buckets = Buckets((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 7.0):
        buckets.observe(value)
    snap = buckets.snapshot()
    assert snap.cumulative == (1, 3, 4)
    assert snap.family_buckets() == [("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0)]
    with pytest.raises(ValueError, match="increasing"):
        Buckets((1.0, 0.5))


def test_the_broker_collector_reads_the_store_the_engine_and_quotas(tmp_path: Path) -> None:
    with Broker.open(tmp_path / "store", BrokerSettings(fsync=FsyncPolicy.INTERVAL)) as broker:
        broker.publish("events", b"a", lite_topics=["feed-1"])
        broker.publish("events", b"b", lite_topics=["feed-1"])
        hub = Hub(broker, quotas=Quotas({"acme": TenantLimits(10, None)}))
        hub.engine.open(1, grouped=False)
        hub.engine.add(1, b"q1", cursor=0, end=3)
        hub.engine.add(1, b"q2", cursor=5, end=5)
        hub.engine.grant(1, 10)
        text = _registry_text(BrokerCollector(hub))
        hub._executor.shutdown()
    samples = _samples(text)
    assert _value(samples, bn.BROKER_PUBLISHED.total) == 2
    assert _value(samples, bn.BROKER_LOG_RECORDS.total) >= 2
    assert _value(samples, bn.BROKER_LOG_APPENDS.total) >= 1
    assert _value(samples, bn.BROKER_QUEUES_CREATED.total) >= 1
    assert _value(samples, bn.BROKER_QUEUES_EXPIRED.total) == 0
    assert _value(samples, bn.BROKER_CONSUMERS.name) == 1
    assert _value(samples, bn.BROKER_SUBSCRIPTIONS.name) == 2
    assert _value(samples, bn.BROKER_READY_QUEUES.name) == 1
    assert _value(samples, bn.BROKER_CONSUMER_LAG.name) == 3
    assert _value(samples, bn.BROKER_TENANT_LITE_TOPICS.name, tenant="acme") == 0


def test_engine_stats_sum_ready_sets_and_plain_lag() -> None:
    engine = Engine()
    engine.open(1, grouped=False)
    engine.open(2, grouped=True)
    engine.add(1, b"a", cursor=2, end=10)
    engine.add(1, b"b", cursor=4, end=4)
    engine.add(2, b"a", cursor=None, end=10)
    engine.appended({b"b": 6})
    stats = engine.stats()
    assert (stats.consumers, stats.subscriptions) == (2, 3)
    assert (stats.ready, stats.max_ready) == (3, 2)
    assert stats.lag == 8 + 2  # a group's position is not the engine's to know
    engine.grant(1, 100)
    for pull in engine.take(1, max_messages=100):
        engine.delivered(1, pull, sent=pull.count, next_cursor=(pull.cursor or 0) + pull.count)
    assert engine.stats().lag == 0


def _registry_text(*collectors: object) -> str:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    return generate_latest(registry).decode()
