"""The broker's metrics, in one place: names, kinds, help, labels, buckets.

Also the vocabulary every tidegate metric is written in: :class:`MetricSpec`,
its factories, the closed set of label names. It lives here because the
broker is the package every other one may import: the scheduler's names
(:mod:`scheduler.metric_names`) are built from it without breaking the
dependency rules (``broker`` imports nothing of ``scheduler``, ``workers`` or
``tidegate``).

Why one names module per package: the package's collectors
(:mod:`broker.metrics`) and the dashboards (``dashboards/``) both take their
names from it, so a dashboard cannot query a series the server does not
export under that name. Pure data, standard library only, so anything may
import it without pulling in Prometheus or the store.

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
    "BAND",
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
    "FSYNC_BUCKETS",
    "KIND",
    "LABELS",
    "REASON",
    "SPECS",
    "TENANT",
    "WORKER",
    "Kind",
    "MetricSpec",
    "counter",
    "gauge",
    "histogram",
]

Kind = Literal["counter", "gauge", "histogram"]

# Label names: the only ones any tidegate metric uses (the broker's and the
# scheduler's), kept together so the closed set is visible in one place.
TENANT = "tenant"
BAND = "band"
WORKER = "worker"
REASON = "reason"
KIND = "kind"
EVENT = "event"
LABELS = frozenset({TENANT, BAND, WORKER, REASON, KIND, EVENT})

# Histogram buckets, in seconds: an fsync takes a disk from a tenth of a
# millisecond (a fast SSD) to a second (a saturated one).
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


def counter(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", text, labels)


def gauge(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", text, labels)


def histogram(name: str, text: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "histogram", text, labels)


_B = "tidegate_broker_"

BROKER_PUBLISHED = counter(_B + "published_messages", "Messages published since the server started")
BROKER_QUEUES = gauge(_B + "queues", "Live queues (topics and lite-topics)")
BROKER_QUEUES_CREATED = counter(_B + "queues_created", "Queues (mostly lite-topics) ever created")
BROKER_QUEUES_EXPIRED = counter(
    _B + "queues_expired", "Lite-topics removed after their TTL since the server started"
)
BROKER_SUBSCRIBED_QUEUES = gauge(_B + "subscribed_queues", "Queues with a subscriber")
BROKER_LOG_BYTES = gauge(_B + "log_bytes", "Bytes in the commit log")
BROKER_LOG_SEGMENTS = gauge(_B + "log_segments", "Segment files of the commit log")
BROKER_LOG_APPENDS = counter(_B + "log_appends", "Appends (one write each) to the commit log")
BROKER_LOG_RECORDS = counter(_B + "log_records", "Records appended to the commit log")
BROKER_LOG_APPENDED_BYTES = counter(_B + "log_appended_bytes", "Bytes appended to the commit log")
BROKER_LOG_FSYNCS = counter(_B + "log_fsyncs", "Segment fsyncs of the commit log")
BROKER_FSYNC_SECONDS = histogram(_B + "fsync_seconds", "Latency of the commit log's fsync calls")
BROKER_TENANT_LITE_TOPICS = gauge(
    _B + "tenant_lite_topics", "Live lite-topics of a tenant with a quota", TENANT
)
BROKER_TENANT_SUBSCRIPTIONS = gauge(_B + "tenant_subscriptions", "Subscriptions held", TENANT)
BROKER_CONSUMERS = gauge(_B + "consumers", "Subscribe streams open")
BROKER_SUBSCRIPTIONS = gauge(_B + "subscriptions", "Queues subscribed, over all streams")
BROKER_READY_QUEUES = gauge(
    _B + "ready_queues", "Entries of the consumers' ready sets (queues with something to deliver)"
)
BROKER_READY_QUEUES_MAX = gauge(_B + "ready_queues_max", "The largest ready set of one consumer")
BROKER_CONSUMER_LAG = gauge(
    _B + "consumer_lag_messages",
    "Messages appended but not yet delivered to plain subscriptions",
)

# Every family above, in the order written (a new one is listed by defining it).
SPECS: tuple[MetricSpec, ...] = tuple(
    value for value in tuple(globals().values()) if isinstance(value, MetricSpec)
)
