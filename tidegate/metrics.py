"""Every metric tidegate exports, in one place: names, kinds, help, labels, buckets.

The broker's collectors (``broker.metrics``), the scheduler's
(``scheduler.metrics``) and the dashboards (``dashboards/``) all take names
from here, so a dashboard cannot query a series the server does not export
under that name. Pure data, no imports beyond the standard library: the
broker and the scheduler import this one module of the ``tidegate`` package
(an exception the import contracts name).

Labels are a closed, bounded set: tenant (configured tenants), band
(priorities in use, capped), worker (fleet worker ids, capped), reason (the
closed set of refusal reasons), kind and event (fixed words). Never a request
or session id.

Series names as Prometheus sees them: a counter ``X`` is exposed as
``X_total``, a histogram as ``X_bucket``/``X_sum``/``X_count``; use the
properties of :class:`MetricSpec` rather than gluing suffixes by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ALL",
    "BAND",
    "BAND_IN_FLIGHT",
    "BAND_PREEMPTIONS",
    "BAND_QUEUED",
    "BAND_WAIT",
    "BROKER_CONSUMERS",
    "BROKER_CONSUMER_LAG",
    "BROKER_FSYNC_SECONDS",
    "BROKER_LOG_APPENDED_BYTES",
    "BROKER_LOG_APPENDS",
    "BROKER_LOG_BYTES",
    "BROKER_LOG_FSYNCS",
    "BROKER_LOG_RECORDS",
    "BROKER_LOG_SEGMENTS",
    "BROKER_PUBLISHED",
    "BROKER_QUEUES",
    "BROKER_QUEUES_CREATED",
    "BROKER_QUEUES_EXPIRED",
    "BROKER_READY_QUEUES",
    "BROKER_READY_QUEUES_MAX",
    "BROKER_SUBSCRIBED_QUEUES",
    "BROKER_SUBSCRIPTIONS",
    "BROKER_TENANT_LITE_TOPICS",
    "BROKER_TENANT_SUBSCRIPTIONS",
    "EVENT",
    "EVENTS",
    "FAIRNESS_BACKLOGGED",
    "FAIRNESS_JAIN",
    "FSYNC_BUCKETS",
    "KIND",
    "PENDING_WRITES",
    "REASON",
    "TENANT",
    "TENANT_ADMITTED",
    "TENANT_COMPLETED",
    "TENANT_DROPPED",
    "TENANT_IN_FLIGHT",
    "TENANT_PREEMPTED",
    "TENANT_QUEUED",
    "TENANT_REFUSED",
    "TENANT_SERVED_TOKENS",
    "TENANT_SERVICE_SHARE",
    "TENANT_SUBMITTED",
    "TENANT_TTFT",
    "TENANT_VIRTUAL_COUNTER",
    "TENANT_WAIT",
    "TENANT_WEIGHT",
    "TENANT_WEIGHT_SHARE",
    "TTFT_BUCKETS",
    "WAIT_BUCKETS",
    "WORKER",
    "WORKERS",
    "WORKER_GPU_MEMORY",
    "WORKER_GPU_UTILIZATION",
    "WORKER_IN_FLIGHT",
    "WORKER_KV_USAGE",
    "WORKER_LEASE_EXPIRIES",
    "WORKER_OUTPUT_TOKENS",
    "WORKER_WINDOW",
    "MetricSpec",
    "by_name",
]

Kind = Literal["counter", "gauge", "histogram"]

# Label names (the only ones used).
TENANT = "tenant"
BAND = "band"
WORKER = "worker"
REASON = "reason"
KIND = "kind"
EVENT = "event"

# Histogram buckets, in seconds. Waits span a busy queue (minutes); first
# tokens an engine's prefill (milliseconds to tens of seconds); fsyncs a disk.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: what a collector yields and a dashboard queries."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()

    @property
    def total(self) -> str:
        """A counter's series name (``_total``)."""
        self._need("counter")
        return f"{self.name}_total"

    @property
    def bucket(self) -> str:
        self._need("histogram")
        return f"{self.name}_bucket"

    @property
    def sum(self) -> str:
        self._need("histogram")
        return f"{self.name}_sum"

    @property
    def count(self) -> str:
        self._need("histogram")
        return f"{self.name}_count"

    @property
    def series(self) -> tuple[str, ...]:
        """Every series name this family exposes."""
        if self.kind == "counter":
            return (self.total,)
        if self.kind == "histogram":
            return (self.bucket, self.sum, self.count)
        return (self.name,)

    def _need(self, kind: Kind) -> None:
        if self.kind != kind:
            raise ValueError(f"metric {self.name} is a {self.kind}, not a {kind}")


def _c(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", text, labels)


def _g(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", text, labels)


def _h(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "histogram", text, labels)


_S = "tidegate_scheduler_"
_B = "tidegate_broker_"

# ------------------------------------------------------------ scheduler: tenants
TENANT_SUBMITTED = _c(_S + "submitted", "Requests submitted (admitted + refused)", TENANT)
TENANT_ADMITTED = _c(_S + "admitted", "Requests admitted", TENANT)
TENANT_REFUSED = _c(_S + "refused", "Requests refused, by reason", TENANT, REASON)
TENANT_DROPPED = _c(_S + "dropped", "Queued requests dropped, by reason", TENANT, REASON)
TENANT_COMPLETED = _c(_S + "completed", "Requests completed", TENANT)
TENANT_PREEMPTED = _c(_S + "preempted", "Preemptions of the tenant's requests", TENANT)
TENANT_QUEUED = _g(_S + "queued", "Requests waiting", TENANT)
TENANT_IN_FLIGHT = _g(_S + "in_flight", "Requests running on workers", TENANT)
TENANT_SERVED_TOKENS = _c(
    _S + "served_tokens", "Tokens served (real usage), input or output", TENANT, KIND
)
TENANT_VIRTUAL_COUNTER = _g(
    _S + "virtual_counter", "Fair-share virtual token counter", TENANT, BAND
)
TENANT_WEIGHT = _g(_S + "tenant_weight", "Configured share weight", TENANT)
TENANT_WAIT = _h(
    _S + "wait_seconds", "Time from entering the queue to a grant (each stint)", TENANT
)
TENANT_TTFT = _h(_S + "ttft_seconds", "Time from admission to the first output token", TENANT)
TENANT_SERVICE_SHARE = _g(
    _S + "service_share",
    "Share of the tokens served in the fairness window (0..1)",
    TENANT,
)
TENANT_WEIGHT_SHARE = _g(
    _S + "weight_share",
    "Share the tenant's weight entitles it to among tenants active in the window (0..1)",
    TENANT,
)
FAIRNESS_JAIN = _g(
    _S + "fairness_jain",
    "Jain's index of weight-normalised service rate while backlogged, over the window "
    "(1: perfectly fair; absent while no tenant was backlogged)",
)
FAIRNESS_BACKLOGGED = _g(
    _S + "fairness_backlogged_tenants", "Tenants backlogged at some point in the window"
)

# ------------------------------------------------------------ scheduler: bands
BAND_QUEUED = _g(_S + "band_queued", "Requests waiting per priority band", BAND)
BAND_IN_FLIGHT = _g(_S + "band_in_flight", "Requests running per priority band", BAND)
BAND_WAIT = _h(_S + "band_wait_seconds", "Queue wait per priority band (each stint)", BAND)
BAND_PREEMPTIONS = _c(_S + "band_preemptions", "Preemptions of the band's requests", BAND)

# ------------------------------------------------------------ scheduler: workers
WORKERS = _g(_S + "workers", "Worker streams attached")
WORKER_WINDOW = _g(_S + "worker_window", "Worker window (max requests in flight)", WORKER)
WORKER_IN_FLIGHT = _g(_S + "worker_in_flight", "Requests on the worker", WORKER)
WORKER_GPU_UTILIZATION = _g(
    _S + "worker_gpu_utilization", "GPU utilisation the worker last reported (0..1)", WORKER
)
WORKER_GPU_MEMORY = _g(
    _S + "worker_gpu_memory", "GPU memory in use the worker last reported (0..1)", WORKER
)
WORKER_KV_USAGE = _g(
    _S + "worker_kv_cache_usage", "KV-cache use the worker last reported (0..1)", WORKER
)
WORKER_OUTPUT_TOKENS = _c(
    _S + "worker_output_tokens", "Output tokens the worker streamed (rate: tokens/s)", WORKER
)
WORKER_LEASE_EXPIRIES = _c(
    _S + "worker_lease_expiries", "Leases lost because the worker went quiet", WORKER
)

# ------------------------------------------------------------ scheduler: runtime
EVENTS = _c(_S + "events", "Runtime events (submitted, granted, chunks, ...)", EVENT)
PENDING_WRITES = _g(_S + "pending_writes", "Reply chunks and records waiting to be stored")

# ------------------------------------------------------------ broker
BROKER_PUBLISHED = _c(_B + "published_messages", "Messages published since the server started")
BROKER_QUEUES = _g(_B + "queues", "Live queues (topics and lite-topics)")
BROKER_QUEUES_CREATED = _c(_B + "queues_created", "Queues (mostly lite-topics) ever created")
BROKER_QUEUES_EXPIRED = _c(
    _B + "queues_expired", "Lite-topics removed after their TTL since the server started"
)
BROKER_SUBSCRIBED_QUEUES = _g(_B + "subscribed_queues", "Queues with a subscriber")
BROKER_LOG_BYTES = _g(_B + "log_bytes", "Bytes in the commit log")
BROKER_LOG_SEGMENTS = _g(_B + "log_segments", "Segment files of the commit log")
BROKER_LOG_APPENDS = _c(_B + "log_appends", "Appends (one write each) to the commit log")
BROKER_LOG_RECORDS = _c(_B + "log_records", "Records appended to the commit log")
BROKER_LOG_APPENDED_BYTES = _c(_B + "log_appended_bytes", "Bytes appended to the commit log")
BROKER_LOG_FSYNCS = _c(_B + "log_fsyncs", "Segment fsyncs of the commit log")
BROKER_FSYNC_SECONDS = _h(_B + "fsync_seconds", "Latency of the commit log's fsync calls")
BROKER_TENANT_LITE_TOPICS = _g(
    _B + "tenant_lite_topics", "Live lite-topics of a tenant with a quota", TENANT
)
BROKER_TENANT_SUBSCRIPTIONS = _g(_B + "tenant_subscriptions", "Subscriptions held", TENANT)
BROKER_CONSUMERS = _g(_B + "consumers", "Subscribe streams open")
BROKER_SUBSCRIPTIONS = _g(_B + "subscriptions", "Queues subscribed, over all streams")
BROKER_READY_QUEUES = _g(
    _B + "ready_queues", "Entries of the consumers' ready sets (queues with something to deliver)"
)
BROKER_READY_QUEUES_MAX = _g(_B + "ready_queues_max", "The largest ready set of one consumer")
BROKER_CONSUMER_LAG = _g(
    _B + "consumer_lag_messages",
    "Messages appended but not yet delivered to plain subscriptions",
)

ALL: tuple[MetricSpec, ...] = tuple(
    value for value in tuple(globals().values()) if isinstance(value, MetricSpec)
)

_BY_NAME = {spec.name: spec for spec in ALL}
_BY_SERIES = {series: spec for spec in ALL for series in spec.series}


def by_name(series: str) -> MetricSpec | None:
    """The family a family or series name belongs to (``X_total``, ``X_bucket`` too)."""
    return _BY_NAME.get(series) or _BY_SERIES.get(series)
