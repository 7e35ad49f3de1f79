"""Prometheus metrics of the scheduler, from one stats snapshot per scrape.

The policy never touches metrics: :class:`SchedulerCollector` reads
``Runtime.stats()`` (the policy's ``stats()`` plus the runtime's counters)
when Prometheus scrapes. Names are constants, for the dashboards; counters
are exposed with the ``_total`` suffix prometheus_client adds. Nothing is
registered at import: the server adds the collector to its private registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from scheduler.runtime.values import RuntimeStats

__all__ = [
    "ADMITTED",
    "BAND_IN_FLIGHT",
    "BAND_QUEUED",
    "COMPLETED",
    "DROPPED",
    "EVENTS",
    "IN_FLIGHT",
    "PENDING_WRITES",
    "PREEMPTED",
    "QUEUED",
    "REFUSED",
    "SERVED_TOKENS",
    "TENANT_WEIGHT",
    "VIRTUAL_COUNTER",
    "WORKERS",
    "WORKER_IN_FLIGHT",
    "WORKER_WINDOW",
    "SchedulerCollector",
]

QUEUED = "tidegate_scheduler_queued"
IN_FLIGHT = "tidegate_scheduler_in_flight"
ADMITTED = "tidegate_scheduler_admitted"
REFUSED = "tidegate_scheduler_refused"
DROPPED = "tidegate_scheduler_dropped"
COMPLETED = "tidegate_scheduler_completed"
PREEMPTED = "tidegate_scheduler_preempted"
SERVED_TOKENS = "tidegate_scheduler_served_tokens"
VIRTUAL_COUNTER = "tidegate_scheduler_virtual_counter"
TENANT_WEIGHT = "tidegate_scheduler_tenant_weight"
BAND_QUEUED = "tidegate_scheduler_band_queued"
BAND_IN_FLIGHT = "tidegate_scheduler_band_in_flight"
WORKERS = "tidegate_scheduler_workers"
WORKER_WINDOW = "tidegate_scheduler_worker_window"
WORKER_IN_FLIGHT = "tidegate_scheduler_worker_in_flight"
EVENTS = "tidegate_scheduler_events"
PENDING_WRITES = "tidegate_scheduler_pending_writes"

Metric = CounterMetricFamily | GaugeMetricFamily


class SchedulerCollector(Collector):
    """Turns one :class:`RuntimeStats` snapshot into metric families."""

    def __init__(self, stats: Callable[[], RuntimeStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield from _tenants(stats)
        yield from _bands_and_workers(stats)
        events = CounterMetricFamily(
            EVENTS,
            "Runtime events (submitted, granted, chunks, lease_expired, ...)",
            labels=["event"],
        )
        for name, count in sorted(stats.counters.items()):
            events.add_metric([name], count)
        yield events
        yield GaugeMetricFamily(
            PENDING_WRITES,
            "Reply chunks and records waiting to be stored",
            value=stats.pending_writes,
        )


def _tenants(stats: RuntimeStats) -> Iterator[Metric]:
    queued = GaugeMetricFamily(QUEUED, "Requests waiting", labels=["tenant"])
    in_flight = GaugeMetricFamily(IN_FLIGHT, "Requests running on workers", labels=["tenant"])
    admitted = CounterMetricFamily(ADMITTED, "Requests admitted", labels=["tenant"])
    completed = CounterMetricFamily(COMPLETED, "Requests completed", labels=["tenant"])
    preempted = CounterMetricFamily(PREEMPTED, "Preemptions", labels=["tenant"])
    refused = CounterMetricFamily(REFUSED, "Requests refused", labels=["tenant", "reason"])
    dropped = CounterMetricFamily(DROPPED, "Queued requests dropped", labels=["tenant", "reason"])
    served = CounterMetricFamily(
        SERVED_TOKENS, "Tokens served (real usage)", labels=["tenant", "kind"]
    )
    virtual = GaugeMetricFamily(
        VIRTUAL_COUNTER, "Fair-share virtual token counter", labels=["tenant", "band"]
    )
    weight = GaugeMetricFamily(TENANT_WEIGHT, "Configured share weight", labels=["tenant"])
    for name, tenant in sorted(stats.policy.tenants.items()):
        queued.add_metric([name], tenant.queued)
        in_flight.add_metric([name], tenant.in_flight)
        admitted.add_metric([name], tenant.admitted)
        completed.add_metric([name], tenant.completed)
        preempted.add_metric([name], tenant.preempted)
        for reason, count in sorted(tenant.refusals.items()):
            refused.add_metric([name, reason], count)
        for reason, count in sorted(tenant.dropped.items()):
            dropped.add_metric([name, reason], count)
        served.add_metric([name, "input"], tenant.served_input_tokens)
        served.add_metric([name, "output"], tenant.served_output_tokens)
        for band, counter in sorted(tenant.virtual_counters.items()):
            virtual.add_metric([name, str(band)], counter)
        weight.add_metric([name], tenant.weight)
    yield from (queued, in_flight, admitted, completed, preempted, refused, dropped)
    yield from (served, virtual, weight)


def _bands_and_workers(stats: RuntimeStats) -> Iterator[Metric]:
    band_queued = GaugeMetricFamily(BAND_QUEUED, "Requests waiting per band", labels=["band"])
    band_running = GaugeMetricFamily(BAND_IN_FLIGHT, "Requests running per band", labels=["band"])
    for band, figures in sorted(stats.policy.bands.items()):
        band_queued.add_metric([str(band)], figures.queued)
        band_running.add_metric([str(band)], figures.in_flight)
    window = GaugeMetricFamily(WORKER_WINDOW, "Worker window (max in flight)", labels=["worker"])
    running = GaugeMetricFamily(WORKER_IN_FLIGHT, "Requests on the worker", labels=["worker"])
    for worker, state in sorted(stats.policy.workers.items()):
        window.add_metric([worker], state.window)
        running.add_metric([worker], state.in_flight)
    yield from (band_queued, band_running, window, running)
    yield GaugeMetricFamily(WORKERS, "Worker streams attached", value=stats.workers)
