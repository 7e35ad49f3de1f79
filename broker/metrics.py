"""Prometheus metrics of the broker server, from stats snapshots (private registry).

Metric names are constants, for the dashboards. Nothing is registered or
served at import: :func:`start_metrics` does both, for ``--metrics-port``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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
    "start_metrics",
]

PUBLISHED = "tidegate_broker_published_messages"
QUEUES = "tidegate_broker_queues"
SUBSCRIBED_QUEUES = "tidegate_broker_subscribed_queues"
LOG_BYTES = "tidegate_broker_log_bytes"
TENANT_LITE_TOPICS = "tidegate_broker_tenant_lite_topics"
TENANT_SUBSCRIPTIONS = "tidegate_broker_tenant_subscriptions"


class BrokerCollector(Collector):
    """Reads one stats snapshot per scrape."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        try:
            stats = self._hub.broker.stats()
        except BrokerError:
            return
        yield CounterMetricFamily(
            PUBLISHED, "Messages published since the server started", value=stats.published_messages
        )
        yield GaugeMetricFamily(QUEUES, "Queues (topics and lite-topics) held", value=stats.queues)
        yield GaugeMetricFamily(
            SUBSCRIBED_QUEUES, "Queues with a subscriber", value=stats.subscribed_queues
        )
        yield GaugeMetricFamily(
            LOG_BYTES, "Bytes in the commit log", value=stats.log_end - stats.log_start
        )
        quotas = self._hub.quotas
        lite = GaugeMetricFamily(TENANT_LITE_TOPICS, "Live lite-topics", labels=["tenant"])
        subs = GaugeMetricFamily(TENANT_SUBSCRIPTIONS, "Subscriptions held", labels=["tenant"])
        for tenant in sorted(quotas.limits):
            lite.add_metric([tenant], quotas.lite_topics(tenant))
            subs.add_metric([tenant], quotas.subscriptions(tenant))
        yield lite
        yield subs


def start_metrics(port: int, hub: Hub, addr: str = "0.0.0.0") -> CollectorRegistry:  # noqa: S104
    """Serve ``/metrics`` on ``port`` from a private registry (a daemon thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(hub))
    start_http_server(port, addr=addr, registry=registry)
    return registry
