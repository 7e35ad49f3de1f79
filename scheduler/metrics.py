"""Prometheus metrics of the scheduler, from one snapshot per scrape.

The policy never touches metrics. A scrape reads, on the event loop (the
runtime's state lives there; :func:`broker.metrics.on_loop`):

* ``Runtime.stats()``: the policy's ``stats()`` plus the runtime's counters
  (per tenant, band and worker state);
* :class:`~scheduler.request_metrics.RequestMetrics`: waits, first tokens,
  preemptions per band, per-worker tokens, lease expiries and GPU readings,
  fed by the runtime's observer hooks;
* :class:`~scheduler.fairness.FairnessWindow`: Jain's index and the shares,
  sampled once a second by a job on the loop (:meth:`SchedulerTelemetry.sample`).

Names, help and labels are :mod:`scheduler.metric_names`'. Nothing is registered
at import: the server adds the collector to its private registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker.metric_names import MetricSpec
from broker.metrics import histogram_family, on_loop
from scheduler import metric_names as m
from scheduler.clock import Clock
from scheduler.fairness import FairnessFigures, FairnessWindow, TenantSample
from scheduler.request_metrics import RequestFigures, RequestMetrics, worker_label
from scheduler.runtime.observer import Observers, RequestObserver
from scheduler.runtime.values import RuntimeStats
from scheduler.types import RefusalReason

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
    "SchedulerTelemetry",
    "fairness_sample",
]

log = logging.getLogger("tidegate.scheduler")

# The names this module exported before they moved to scheduler.metric_names.
QUEUED = m.TENANT_QUEUED.name
IN_FLIGHT = m.TENANT_IN_FLIGHT.name
ADMITTED = m.TENANT_ADMITTED.name
REFUSED = m.TENANT_REFUSED.name
DROPPED = m.TENANT_DROPPED.name
COMPLETED = m.TENANT_COMPLETED.name
PREEMPTED = m.TENANT_PREEMPTED.name
SERVED_TOKENS = m.TENANT_SERVED_TOKENS.name
VIRTUAL_COUNTER = m.TENANT_VIRTUAL_COUNTER.name
TENANT_WEIGHT = m.TENANT_WEIGHT.name
BAND_QUEUED = m.BAND_QUEUED.name
BAND_IN_FLIGHT = m.BAND_IN_FLIGHT.name
WORKERS = m.WORKERS.name
WORKER_WINDOW = m.WORKER_WINDOW.name
WORKER_IN_FLIGHT = m.WORKER_IN_FLIGHT.name
EVENTS = m.EVENTS.name
PENDING_WRITES = m.PENDING_WRITES.name


@dataclass(frozen=True, slots=True)
class _Snapshot:
    stats: RuntimeStats
    requests: RequestFigures | None
    fairness: FairnessFigures | None
    worker_label: Callable[[str], str]


class SchedulerCollector(Collector):
    """Turns one snapshot (taken on ``loop``) into metric families."""

    def __init__(
        self,
        stats: Callable[[], RuntimeStats],
        *,
        requests: RequestMetrics | None = None,
        fairness: FairnessWindow | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._stats = stats
        self._requests = requests
        self._fairness = fairness
        self._loop = loop

    def _take(self) -> _Snapshot:
        requests = self._requests
        return _Snapshot(
            self._stats(),
            requests.snapshot() if requests is not None else None,
            self._fairness.figures() if self._fairness is not None else None,
            requests.worker_of if requests is not None else worker_label,
        )

    def collect(self) -> Iterator[Metric]:
        try:
            snap = on_loop(self._loop, self._take)
        except TimeoutError as exc:
            log.warning("metrics: %s", exc)
            return
        stats = snap.stats
        yield from _tenants(stats)
        yield from _bands(stats, snap.requests)
        yield from _workers(stats, snap.requests, snap.worker_label)
        if snap.requests is not None:
            yield from _request_histograms(snap.requests)
        if snap.fairness is not None:
            yield from _fairness(snap.fairness)
        events = _family(m.EVENTS)
        for name, count in sorted(stats.counters.items()):
            events.add_metric([name], count)
        yield events
        yield GaugeMetricFamily(
            m.PENDING_WRITES.name, m.PENDING_WRITES.help, value=stats.pending_writes
        )


def _family(spec: MetricSpec) -> CounterMetricFamily | GaugeMetricFamily:
    labels = list(spec.labels)
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


_NO_REFUSALS = dict.fromkeys(
    (
        r
        for r in RefusalReason.ALL
        if r not in (RefusalReason.UNKNOWN_TENANT, RefusalReason.DEADLINE)
    ),
    0,
)
_NO_DROPS = {RefusalReason.DEADLINE: 0}


def _tenants(stats: RuntimeStats) -> Iterator[Metric]:
    fam = {
        spec: _family(spec)
        for spec in (
            m.TENANT_SUBMITTED,
            m.TENANT_ADMITTED,
            m.TENANT_REFUSED,
            m.TENANT_DROPPED,
            m.TENANT_COMPLETED,
            m.TENANT_PREEMPTED,
            m.TENANT_QUEUED,
            m.TENANT_IN_FLIGHT,
            m.TENANT_SERVED_TOKENS,
            m.TENANT_VIRTUAL_COUNTER,
            m.TENANT_WEIGHT,
        )
    }
    for name, tenant in sorted(stats.policy.tenants.items()):
        refused = sum(tenant.refusals.values())
        fam[m.TENANT_SUBMITTED].add_metric([name], tenant.admitted + refused)
        fam[m.TENANT_ADMITTED].add_metric([name], tenant.admitted)
        fam[m.TENANT_COMPLETED].add_metric([name], tenant.completed)
        fam[m.TENANT_PREEMPTED].add_metric([name], tenant.preempted)
        fam[m.TENANT_QUEUED].add_metric([name], tenant.queued)
        fam[m.TENANT_IN_FLIGHT].add_metric([name], tenant.in_flight)
        # Every reason, zeros too: a rate is then 0, not missing, before the first one.
        for reason, count in sorted({**_NO_REFUSALS, **tenant.refusals}.items()):
            fam[m.TENANT_REFUSED].add_metric([name, reason], count)
        for reason, count in sorted({**_NO_DROPS, **tenant.dropped}.items()):
            fam[m.TENANT_DROPPED].add_metric([name, reason], count)
        fam[m.TENANT_SERVED_TOKENS].add_metric([name, "input"], tenant.served_input_tokens)
        fam[m.TENANT_SERVED_TOKENS].add_metric([name, "output"], tenant.served_output_tokens)
        for band, counter in sorted(tenant.virtual_counters.items()):
            fam[m.TENANT_VIRTUAL_COUNTER].add_metric([name, str(band)], counter)
        fam[m.TENANT_WEIGHT].add_metric([name], tenant.weight)
    yield from fam.values()


def _bands(stats: RuntimeStats, requests: RequestFigures | None) -> Iterator[Metric]:
    queued = _family(m.BAND_QUEUED)
    running = _family(m.BAND_IN_FLIGHT)
    for band, figures in sorted(stats.policy.bands.items()):
        queued.add_metric([str(band)], figures.queued)
        running.add_metric([str(band)], figures.in_flight)
    yield from (queued, running)
    if requests is not None:
        preemptions = _family(m.BAND_PREEMPTIONS)
        for label, count in sorted(requests.band_preemptions.items()):
            preemptions.add_metric([label], count)
        yield preemptions


def _workers(
    stats: RuntimeStats, requests: RequestFigures | None, label: Callable[[str], str]
) -> Iterator[Metric]:
    # Streams of one worker (a reconnect while the old one drains) share a
    # label, so their figures add up: one series per label, never two.
    window: dict[str, int] = {}
    running: dict[str, int] = {}
    for key, state in stats.policy.workers.items():
        name = label(key)
        window[name] = window.get(name, 0) + state.window
        running[name] = running.get(name, 0) + state.in_flight
    yield _labelled(m.WORKER_WINDOW, window)
    yield _labelled(m.WORKER_IN_FLIGHT, running)
    yield GaugeMetricFamily(m.WORKERS.name, m.WORKERS.help, value=stats.workers)
    if requests is None:
        return
    attached = set(window)
    yield _labelled(
        m.WORKER_OUTPUT_TOKENS, {**dict.fromkeys(attached, 0), **requests.worker_tokens}
    )
    yield _labelled(
        m.WORKER_LEASE_EXPIRIES,
        {**dict.fromkeys(attached, 0), **requests.worker_lease_expiries},
    )
    readings = {w: f for w, f in requests.worker_feedback.items() if w in attached}
    for spec, attr in (
        (m.WORKER_GPU_UTILIZATION, "gpu_util"),
        (m.WORKER_GPU_MEMORY, "gpu_mem"),
        (m.WORKER_KV_USAGE, "kv_usage"),
    ):
        values = {w: getattr(f, attr) for w, f in readings.items()}
        yield _labelled(spec, {w: v for w, v in values.items() if v is not None})


def _labelled(spec: MetricSpec, values: Mapping[str, float]) -> Metric:
    family = _family(spec)
    for name, value in sorted(values.items()):
        family.add_metric([name], value)
    return family


def _request_histograms(requests: RequestFigures) -> Iterator[Metric]:
    for spec, table in (
        (m.TENANT_WAIT, requests.tenant_waits),
        (m.BAND_WAIT, requests.band_waits),
        (m.TENANT_TTFT, requests.tenant_ttft),
    ):
        yield histogram_family(spec, [((key,), snap) for key, snap in sorted(table.items())])


def _fairness(figures: FairnessFigures) -> Iterator[Metric]:
    if figures.jain is not None:
        yield GaugeMetricFamily(m.FAIRNESS_JAIN.name, m.FAIRNESS_JAIN.help, value=figures.jain)
    yield GaugeMetricFamily(
        m.FAIRNESS_BACKLOGGED.name, m.FAIRNESS_BACKLOGGED.help, value=figures.backlogged
    )
    yield _labelled(m.TENANT_SERVICE_SHARE, figures.service_share)
    yield _labelled(m.TENANT_WEIGHT_SHARE, figures.weight_share)


def fairness_sample(stats: RuntimeStats) -> dict[str, TenantSample]:
    """The tenants' figures a :class:`FairnessWindow` samples."""
    return {
        name: TenantSample(float(t.served_tokens), t.weight, t.queued > 0)
        for name, t in stats.policy.tenants.items()
    }


class SchedulerTelemetry:
    """What the server observes of its scheduler, in one place for the composition root.

    ``observer`` goes to the ``Runtime``; :meth:`sample` runs as a job on the
    loop; :meth:`collector` goes to the metrics registry. ``tracer``, when
    given, observes the same moves after the metrics do.
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        sample_s: float = 1.0,
        tracer: RequestObserver | None = None,
    ) -> None:
        if not sample_s > 0:
            raise ValueError(f"fairness sample_s is {sample_s!r}; it must be > 0")
        self.requests = RequestMetrics()
        self.fairness = FairnessWindow(window_s)
        self.sample_s = sample_s
        self.observer: RequestObserver = (
            self.requests if tracer is None else Observers(self.requests, tracer)
        )

    async def sample(self, stats: Callable[[], RuntimeStats], clock: Clock) -> None:
        """Feed the fairness window every ``sample_s`` until cancelled."""
        while True:
            try:
                self.fairness.sample(clock.now(), fairness_sample(stats()))
            except Exception:  # a bad sample must not end the sampling
                log.exception("fairness sample failed")
            await clock.sleep(self.sample_s)

    def collector(self, stats: Callable[[], RuntimeStats]) -> SchedulerCollector:
        """A collector reading on the running loop (call it on the loop)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return SchedulerCollector(stats, requests=self.requests, fairness=self.fairness, loop=loop)
