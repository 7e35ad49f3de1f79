"""Prometheus metrics of the broker server, from stats snapshots (private registry).

Names, help and labels come from :mod:`broker.metric_names` (one place for the
collectors and the dashboards). Nothing is registered or served at import:
:func:`start_metrics` does both, for ``--metrics-port``.

Where each figure comes from, read at scrape time:

* the store's :meth:`~broker.store.Broker.stats` (thread-safe, under the
  store's lock): messages, queues created/expired, log bytes and appends;
* the delivery engine's :meth:`~broker.subscriptions.Engine.stats`: ready
  sets and lag. The engine lives on the event loop, so the scrape thread
  asks the loop for it (:func:`on_loop`) instead of reading it mid-change;
* :class:`FsyncTimer`, the one hook: the commit log's fsync, timed.

This module also holds the two small helpers the scheduler's collectors
share (:class:`Buckets`, :func:`on_loop`): the broker is the package every
other one may import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from broker import metric_names as m
from broker.errors import BrokerError
from broker.hub import Hub

__all__ = [
    "LOG_BYTES",
    "PUBLISHED",
    "QUEUES",
    "SUBSCRIBED_QUEUES",
    "TENANT_LITE_TOPICS",
    "TENANT_SUBSCRIPTIONS",
    "BrokerCollector",
    "Buckets",
    "FsyncTimer",
    "HistogramSnapshot",
    "on_loop",
    "start_metrics",
]

log = logging.getLogger("tidegate.broker")

T = TypeVar("T")

# The names this module exported before they moved to broker.metric_names.
PUBLISHED = m.BROKER_PUBLISHED.name
QUEUES = m.BROKER_QUEUES.name
SUBSCRIBED_QUEUES = m.BROKER_SUBSCRIBED_QUEUES.name
LOG_BYTES = m.BROKER_LOG_BYTES.name
TENANT_LITE_TOPICS = m.BROKER_TENANT_LITE_TOPICS.name
TENANT_SUBSCRIPTIONS = m.BROKER_TENANT_SUBSCRIPTIONS.name

ON_LOOP_TIMEOUT_S = 5.0


# ------------------------------------------------------------------ helpers


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """Cumulative bucket counts (one per bound, then +Inf), sum and count."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    total: float
    count: int

    def family_buckets(self) -> list[tuple[str, float]]:
        edges = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        return list(zip(edges, map(float, self.cumulative), strict=True))


class Buckets:
    """A histogram's counts, observed from any thread (a lock per observation)."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError(f"bucket bounds {list(bounds)} must be distinct and increasing")
        self._bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le).
        slot = bisect_left(self._bounds, value)
        with self._lock:
            self._counts[slot] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative: list[int] = []
        running = 0
        for count in counts:
            running += count
            cumulative.append(running)
        return HistogramSnapshot(self._bounds, tuple(cumulative), total, running)


def histogram_family(
    spec: m.MetricSpec, snapshots: Sequence[tuple[Sequence[str], HistogramSnapshot]]
) -> HistogramMetricFamily:
    """One histogram family from (label values, snapshot) pairs."""
    if not spec.labels:
        ((_, only),) = snapshots
        return HistogramMetricFamily(
            spec.name, spec.help, buckets=only.family_buckets(), sum_value=only.total
        )
    family = HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    for labels, snap in snapshots:
        family.add_metric(list(labels), snap.family_buckets(), snap.total)
    return family


def on_loop(
    loop: asyncio.AbstractEventLoop | None,
    fn: Callable[[], T],
    timeout_s: float = ON_LOOP_TIMEOUT_S,
) -> T:
    """``fn()`` run on ``loop``'s thread, for a scrape thread reading state the
    loop changes. Runs it here when there is no running loop or when this is
    the loop's own thread. Raises TimeoutError when the loop does not get to
    it in ``timeout_s`` (a blocked loop: the scrape then lacks these figures)."""
    if loop is None or not loop.is_running():
        return fn()
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if here is loop:
        return fn()
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:  # the loop closed meanwhile
        return fn()
    try:
        return future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"the event loop did not answer a scrape in {timeout_s} s") from None


# ------------------------------------------------------------------ fsync


class FsyncTimer(Collector):
    """The commit log's fsync (pass it to ``Broker.open(fsync=...)``), timed.

    Every fsync of the log goes through it: segments (group commit, the
    interval flusher, rotation) and the log's directory. Observations come
    from the broker's threads; a scrape reads a snapshot.
    """

    def __init__(
        self,
        fsync: Callable[[int], None] = os.fsync,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._fsync = fsync
        self._clock = clock
        self.buckets = Buckets(m.FSYNC_BUCKETS)

    def __call__(self, fd: int) -> None:
        start = self._clock()
        try:
            self._fsync(fd)
        finally:
            self.buckets.observe(self._clock() - start)

    def collect(self) -> Iterator[Metric]:
        yield histogram_family(m.BROKER_FSYNC_SECONDS, [((), self.buckets.snapshot())])


# ------------------------------------------------------------------ the broker


class BrokerCollector(Collector):
    """Reads one stats snapshot per scrape (the engine's on ``loop``)."""

    def __init__(self, hub: Hub, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._hub = hub
        self._loop = loop

    def collect(self) -> Iterator[Metric]:
        yield from self._store()
        yield from self._tenants()
        try:
            engine = on_loop(self._loop, self._hub.engine.stats)
        except TimeoutError as exc:
            log.warning("metrics: %s", exc)
            return
        yield _gauge(m.BROKER_CONSUMERS, engine.consumers)
        yield _gauge(m.BROKER_SUBSCRIPTIONS, engine.subscriptions)
        yield _gauge(m.BROKER_READY_QUEUES, engine.ready)
        yield _gauge(m.BROKER_READY_QUEUES_MAX, engine.max_ready)
        yield _gauge(m.BROKER_CONSUMER_LAG, engine.lag)

    def _store(self) -> Iterator[Metric]:
        try:
            stats = self._hub.broker.stats()
        except BrokerError:
            return  # closed or failed: the scrape says so by the missing series
        counters = stats.counters
        yield _counter(m.BROKER_PUBLISHED, stats.published_messages)
        yield _gauge(m.BROKER_QUEUES, stats.queues)
        yield _counter(m.BROKER_QUEUES_CREATED, counters.get("queues_created", 0))
        yield _counter(m.BROKER_QUEUES_EXPIRED, counters.get("queues_expired", 0))
        yield _gauge(m.BROKER_SUBSCRIBED_QUEUES, stats.subscribed_queues)
        yield _gauge(m.BROKER_LOG_BYTES, stats.log_end - stats.log_start)
        yield _gauge(m.BROKER_LOG_SEGMENTS, stats.log_segments)
        yield _counter(m.BROKER_LOG_APPENDS, counters.get("log_appends", 0))
        yield _counter(m.BROKER_LOG_RECORDS, counters.get("log_records", 0))
        yield _counter(m.BROKER_LOG_APPENDED_BYTES, counters.get("log_appended_bytes", 0))
        yield _counter(m.BROKER_LOG_FSYNCS, counters.get("log_fsyncs", 0))

    def _tenants(self) -> Iterator[Metric]:
        quotas = self._hub.quotas
        lite = _labelled_gauge(m.BROKER_TENANT_LITE_TOPICS)
        subs = _labelled_gauge(m.BROKER_TENANT_SUBSCRIPTIONS)
        for tenant in sorted(quotas.limits):
            lite.add_metric([tenant], quotas.lite_topics(tenant))
            subs.add_metric([tenant], quotas.subscriptions(tenant))
        yield lite
        yield subs


def _gauge(spec: m.MetricSpec, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.name, spec.help, value=value)


def _labelled_gauge(spec: m.MetricSpec) -> GaugeMetricFamily:
    return GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))


def _counter(spec: m.MetricSpec, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(spec.name, spec.help, value=value)


def start_metrics(
    port: int,
    hub: Hub,
    addr: str = "0.0.0.0",  # noqa: S104 - a metrics port is scraped from elsewhere
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    collectors: Sequence[Collector] = (),
) -> CollectorRegistry:
    """Serve ``/metrics`` on ``port`` from a private registry (a daemon thread):
    the broker's figures (the engine's read on ``loop``) and ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(hub, loop))
    for collector in collectors:
        registry.register(collector)
    start_http_server(port, addr=addr, registry=registry)
    return registry
