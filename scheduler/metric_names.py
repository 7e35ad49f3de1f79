"""The scheduler's metrics, in one place: names, kinds, help, labels, buckets.

Tenants, priority bands, workers, fairness and the runtime's own counters.
The scheduler's collectors (:mod:`scheduler.metrics`,
:mod:`scheduler.request_metrics`) and the dashboards (``dashboards/``) both
take their names from here, so a dashboard cannot query a series the server
does not export under that name. Pure data: the standard library and the
vocabulary of :mod:`broker.metric_names` (:class:`MetricSpec`, the label
names), which the scheduler may import; nothing of ``workers`` or
``tidegate``.

Labels are a closed, bounded set (listed in :mod:`broker.metric_names`):
tenant (configured tenants), band (priorities in use, capped), worker (fleet
worker ids, capped), reason (the closed set of refusal reasons), kind and
event (fixed words). Never a request or session id.

Series names as Prometheus sees them: a counter ``X`` is exposed as
``X_total``, a histogram as ``X_bucket``/``X_sum``/``X_count``; use the
properties of :class:`~broker.metric_names.MetricSpec` rather than gluing
suffixes by hand.
"""

from __future__ import annotations

from broker.metric_names import (
    BAND,
    EVENT,
    KIND,
    REASON,
    TENANT,
    WORKER,
    MetricSpec,
    counter,
    gauge,
    histogram,
)

__all__ = [
    "BAND_IN_FLIGHT",
    "BAND_PREEMPTIONS",
    "BAND_QUEUED",
    "BAND_WAIT",
    "EVENTS",
    "FAIRNESS_BACKLOGGED",
    "FAIRNESS_JAIN",
    "PENDING_WRITES",
    "SPECS",
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
    "WORKERS",
    "WORKER_GPU_MEMORY",
    "WORKER_GPU_UTILIZATION",
    "WORKER_IN_FLIGHT",
    "WORKER_KV_USAGE",
    "WORKER_LEASE_EXPIRIES",
    "WORKER_OUTPUT_TOKENS",
    "WORKER_WINDOW",
]

# Histogram buckets, in seconds. Waits span a busy queue (minutes); first
# tokens an engine's prefill (milliseconds to tens of seconds).
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_S = "tidegate_scheduler_"

# ------------------------------------------------------------ tenants
TENANT_SUBMITTED = counter(_S + "submitted", "Requests submitted (admitted + refused)", TENANT)
TENANT_ADMITTED = counter(_S + "admitted", "Requests admitted", TENANT)
TENANT_REFUSED = counter(_S + "refused", "Requests refused, by reason", TENANT, REASON)
TENANT_DROPPED = counter(_S + "dropped", "Queued requests dropped, by reason", TENANT, REASON)
TENANT_COMPLETED = counter(_S + "completed", "Requests completed", TENANT)
TENANT_PREEMPTED = counter(_S + "preempted", "Preemptions of the tenant's requests", TENANT)
TENANT_QUEUED = gauge(_S + "queued", "Requests waiting", TENANT)
TENANT_IN_FLIGHT = gauge(_S + "in_flight", "Requests running on workers", TENANT)
TENANT_SERVED_TOKENS = counter(
    _S + "served_tokens", "Tokens served (real usage), input or output", TENANT, KIND
)
TENANT_VIRTUAL_COUNTER = gauge(
    _S + "virtual_counter", "Fair-share virtual token counter", TENANT, BAND
)
TENANT_WEIGHT = gauge(_S + "tenant_weight", "Configured share weight", TENANT)
TENANT_WAIT = histogram(
    _S + "wait_seconds", "Time from entering the queue to a grant (each stint)", TENANT
)
TENANT_TTFT = histogram(
    _S + "ttft_seconds", "Time from admission to the first output token", TENANT
)
TENANT_SERVICE_SHARE = gauge(
    _S + "service_share",
    "Share of the tokens served in the fairness window (0..1)",
    TENANT,
)
TENANT_WEIGHT_SHARE = gauge(
    _S + "weight_share",
    "Share the tenant's weight entitles it to among tenants active in the window (0..1)",
    TENANT,
)
FAIRNESS_JAIN = gauge(
    _S + "fairness_jain",
    "Jain's index of weight-normalised service rate while backlogged, over the window "
    "(1: perfectly fair; absent while no tenant was backlogged)",
)
FAIRNESS_BACKLOGGED = gauge(
    _S + "fairness_backlogged_tenants", "Tenants backlogged at some point in the window"
)

# ------------------------------------------------------------ bands
BAND_QUEUED = gauge(_S + "band_queued", "Requests waiting per priority band", BAND)
BAND_IN_FLIGHT = gauge(_S + "band_in_flight", "Requests running per priority band", BAND)
BAND_WAIT = histogram(_S + "band_wait_seconds", "Queue wait per priority band (each stint)", BAND)
BAND_PREEMPTIONS = counter(_S + "band_preemptions", "Preemptions of the band's requests", BAND)

# ------------------------------------------------------------ workers
WORKERS = gauge(_S + "workers", "Worker streams attached")
WORKER_WINDOW = gauge(_S + "worker_window", "Worker window (max requests in flight)", WORKER)
WORKER_IN_FLIGHT = gauge(_S + "worker_in_flight", "Requests on the worker", WORKER)
WORKER_GPU_UTILIZATION = gauge(
    _S + "worker_gpu_utilization", "GPU utilisation the worker last reported (0..1)", WORKER
)
WORKER_GPU_MEMORY = gauge(
    _S + "worker_gpu_memory", "GPU memory in use the worker last reported (0..1)", WORKER
)
WORKER_KV_USAGE = gauge(
    _S + "worker_kv_cache_usage", "KV-cache use the worker last reported (0..1)", WORKER
)
WORKER_OUTPUT_TOKENS = counter(
    _S + "worker_output_tokens", "Output tokens the worker streamed (rate: tokens/s)", WORKER
)
WORKER_LEASE_EXPIRIES = counter(
    _S + "worker_lease_expiries", "Leases lost because the worker went quiet", WORKER
)

# ------------------------------------------------------------ runtime
EVENTS = counter(_S + "events", "Runtime events (submitted, granted, chunks, ...)", EVENT)
PENDING_WRITES = gauge(_S + "pending_writes", "Reply chunks and records waiting to be stored")

# Every family above, in the order written (a new one is listed by defining it).
SPECS: tuple[MetricSpec, ...] = tuple(
    value for value in tuple(globals().values()) if isinstance(value, MetricSpec)
)
