"""The four dashboards, built with Grafana's own typed builder (grafana-foundation-sdk).

Every query takes its metric names from :mod:`broker.metric_names` (``bn``)
and :mod:`scheduler.metric_names` (``sn``), the modules the server's
collectors export from, so a renamed metric cannot leave a dashboard
querying nothing unnoticed (``tests/unit/observability``
checks every name a query uses, ``tests/integration/observability`` runs
every query against a real Prometheus scraping a real server).

``$__rate_interval`` is Grafana's own: a rate window that fits the scrape
interval and the panel's resolution.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from broker import metric_names as bn
from broker.metric_names import MetricSpec
from scheduler import metric_names as sn

__all__ = ["DASHBOARDS", "DATASOURCE_UID", "generate"]

DATASOURCE_UID = "tidegate-prometheus"  # the provisioned datasource's uid
_DS = DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
_RATE = "[$__rate_interval]"


@dataclass(frozen=True, slots=True)
class Q:
    """One query of a panel: PromQL and how its series are named."""

    expr: str
    legend: str = ""


def _rate(series: str, by: str = "") -> str:
    inner = f"rate({series}{_RATE})"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def _quantile(q: float, spec: MetricSpec, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({spec.bucket}{_RATE})))"


def _mean(spec: MetricSpec, by: str) -> str:
    return f"{_rate(spec.sum, by)} / {_rate(spec.count, by)}"


_REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # Grafana names a panel's queries A, B, ...


class _Board:
    """A dashboard under construction: panels numbered in order, queries lettered."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self._next_id = 0
        self.builder = (
            dashboard.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["tidegate"])
            .refresh("10s")
            .time("now-30m", "now")
            .timezone("browser")
            .readonly()
        )

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def row(self, title: str) -> None:
        self.builder.with_row(dashboard.Row(title).id(self._id()))

    def series(
        self,
        title: str,
        description: str,
        *queries: Q,
        unit: str = "short",
        span: int = 12,
        lo: float | None = None,
        hi: float | None = None,
    ) -> None:
        panel = (
            timeseries.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(_DS)
            .unit(unit)
            .span(span)
            .height(8)
            .legend(
                common.VizLegendOptions()
                .show_legend(True)
                .display_mode(LegendDisplayMode.LIST)
                .placement(LegendPlacement.BOTTOM)
            )
            .tooltip(
                common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
            )
        )
        if lo is not None:
            panel.min(lo)
        if hi is not None:
            panel.max(hi)
        if len(queries) > len(_REF_IDS):
            raise ValueError(f"panel {title!r} has {len(queries)} queries; at most {len(_REF_IDS)}")
        for letter, query in zip(_REF_IDS, queries, strict=False):
            panel.with_target(_target(letter, query))
        self.builder.with_panel(panel)

    def fraction(self, title: str, description: str, *queries: Q, span: int = 12) -> None:
        """A time series of shares in [0, 1], drawn as percentages on a fixed 0-100 % axis."""
        self.series(title, description, *queries, unit="percentunit", lo=0, hi=1, span=span)

    def stat(self, title: str, description: str, query: Q, *, unit: str = "short") -> None:
        panel = (
            stat.Panel()
            .id(self._id())
            .title(title)
            .description(description)
            .datasource(_DS)
            .unit(unit)
            .span(6)
            .height(8)
            .graph_mode(BigValueGraphMode.LINE)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
            .with_target(_target("A", query))
        )
        self.builder.with_panel(panel)


def _target(letter: str, query: Q) -> prometheus.Dataquery:
    return (
        prometheus.Dataquery()
        .ref_id(letter)
        .expr(query.expr)
        .legend_format(query.legend)
        .range()
        .datasource(_DS)
    )


# ------------------------------------------------------------------ fairness


def fairness() -> DashboardModel:
    b = _Board(
        "tidegate-fairness",
        "tidegate / fairness",
        "Does each tenant get the share its weight entitles it to, and what does it wait?",
    )
    b.row("Shares against weights")
    b.fraction(
        "Share of service against weight",
        "Each tenant's share of the tokens served over the fairness window (served) beside "
        "the share its weight entitles it to among the tenants active then (entitled).",
        Q(sn.TENANT_SERVICE_SHARE.name, "{{tenant}} served"),
        Q(sn.TENANT_WEIGHT_SHARE.name, "{{tenant}} entitled"),
    )
    b.series(
        "Served / entitled",
        "Share of service divided by the weight's share: 1 is exactly fair, below 1 the "
        "tenant got less than its weight says.",
        Q(f"{sn.TENANT_SERVICE_SHARE.name} / {sn.TENANT_WEIGHT_SHARE.name}", "{{tenant}}"),
        lo=0,
    )
    b.fraction(
        "Jain's fairness index",
        "Jain's index of the weight-normalised service rate of the tenants backlogged in the "
        "window: 1 when every backlogged tenant gets service in proportion to its weight.",
        Q(sn.FAIRNESS_JAIN.name, "Jain's index"),
        span=18,
    )
    b.stat(
        "Backlogged tenants",
        "Tenants with requests waiting at some point in the fairness window.",
        Q(sn.FAIRNESS_BACKLOGGED.name, "backlogged"),
    )
    b.series(
        "Tokens served per second",
        "Input and output tokens of completed requests, per tenant.",
        Q(_rate(sn.TENANT_SERVED_TOKENS.total, "tenant"), "{{tenant}}"),
    )
    b.series(
        "Weights",
        "Configured share weights (hot-reloaded with the settings).",
        Q(sn.TENANT_WEIGHT.name, "{{tenant}}"),
    )
    b.row("Waits by tenant and band")
    b.series(
        "Queue wait p95 by tenant",
        "95th percentile of the time from entering the queue to a grant.",
        Q(_quantile(0.95, sn.TENANT_WAIT, "tenant"), "{{tenant}}"),
        unit="s",
    )
    b.series(
        "Mean queue wait by tenant",
        "Mean time from entering the queue to a grant.",
        Q(_mean(sn.TENANT_WAIT, "tenant"), "{{tenant}}"),
        unit="s",
    )
    b.series(
        "Queue wait p95 by priority band",
        "95th percentile of the queue wait per priority band (higher bands go first).",
        Q(_quantile(0.95, sn.BAND_WAIT, "band"), "band {{band}}"),
        unit="s",
    )
    b.series(
        "Queued requests",
        "Requests waiting, by tenant and by priority band.",
        Q(sn.TENANT_QUEUED.name, "{{tenant}}"),
        Q(sn.BAND_QUEUED.name, "band {{band}}"),
    )
    return b.builder.build()


# ------------------------------------------------------------------ latency


def latency() -> DashboardModel:
    b = _Board(
        "tidegate-latency",
        "tidegate / latency",
        "Time to first token, queue waits, admissions and refusals.",
    )
    b.row("Time to first token")
    b.series(
        "Time to first token by tenant",
        "From admission to the first output token, p50 and p95.",
        Q(_quantile(0.5, sn.TENANT_TTFT, "tenant"), "{{tenant}} p50"),
        Q(_quantile(0.95, sn.TENANT_TTFT, "tenant"), "{{tenant}} p95"),
        unit="s",
    )
    b.series(
        "Time to first token, all tenants",
        "p50, p95 and p99 over every tenant.",
        Q(_quantile(0.5, sn.TENANT_TTFT), "p50"),
        Q(_quantile(0.95, sn.TENANT_TTFT), "p95"),
        Q(_quantile(0.99, sn.TENANT_TTFT), "p99"),
        unit="s",
    )
    b.series(
        "Queue wait, all tenants",
        "p50 and p99 of the time from entering the queue to a grant.",
        Q(_quantile(0.5, sn.TENANT_WAIT), "p50"),
        Q(_quantile(0.99, sn.TENANT_WAIT), "p99"),
        unit="s",
    )
    b.series(
        "Mean time to first token by tenant",
        "Mean from admission to the first output token.",
        Q(_mean(sn.TENANT_TTFT, "tenant"), "{{tenant}}"),
        unit="s",
    )
    b.row("Admission")
    b.series(
        "Submitted, admitted and completed per second",
        "Requests per second, by tenant.",
        Q(_rate(sn.TENANT_SUBMITTED.total, "tenant"), "{{tenant}} submitted"),
        Q(_rate(sn.TENANT_ADMITTED.total, "tenant"), "{{tenant}} admitted"),
        Q(_rate(sn.TENANT_COMPLETED.total, "tenant"), "{{tenant}} completed"),
        unit="reqps",
    )
    b.series(
        "Refused per second by reason",
        "Submits refused by admission (rate limits, queue caps, shedding, ...).",
        Q(_rate(sn.TENANT_REFUSED.total, "tenant, reason"), "{{tenant}} {{reason}}"),
        unit="reqps",
    )
    b.series(
        "Dropped per second by reason",
        "Queued requests dropped without running (their deadline passed).",
        Q(_rate(sn.TENANT_DROPPED.total, "tenant, reason"), "{{tenant}} {{reason}}"),
        unit="reqps",
    )
    b.series(
        "In flight by tenant",
        "Requests running on workers.",
        Q(sn.TENANT_IN_FLIGHT.name, "{{tenant}}"),
    )
    b.series(
        "Preemptions per second by priority band",
        "Running requests stopped to make room for a higher band (they resume later).",
        Q(_rate(sn.BAND_PREEMPTIONS.total, "band"), "band {{band}}"),
        unit="ops",
    )
    b.series(
        "Running by priority band",
        "Requests running, by priority band.",
        Q(sn.BAND_IN_FLIGHT.name, "band {{band}}"),
    )
    return b.builder.build()


# ------------------------------------------------------------------ GPU fleet


def fleet() -> DashboardModel:
    b = _Board(
        "tidegate-fleet",
        "tidegate / GPU fleet",
        "Each worker's GPU, its window and what it streams, as its feedback reports them.",
    )
    b.row("GPUs")
    b.fraction(
        "GPU utilisation",
        "As each worker's GPU probe last reported it.",
        Q(sn.WORKER_GPU_UTILIZATION.name, "{{worker}}"),
    )
    b.fraction(
        "GPU memory in use",
        "Fraction of each worker's GPU memory in use. Workers whose engine reports its KV "
        "cache (vLLM, simulated) report that instead: such an engine reserves its memory "
        "up front.",
        Q(sn.WORKER_GPU_MEMORY.name, "{{worker}}"),
    )
    b.fraction(
        "KV-cache use",
        "Fraction of each engine's KV cache in use.",
        Q(sn.WORKER_KV_USAGE.name, "{{worker}}"),
    )
    b.series(
        "Output tokens per second",
        "Tokens each worker streamed back.",
        Q(_rate(sn.WORKER_OUTPUT_TOKENS.total, "worker"), "{{worker}}"),
    )
    b.row("Windows and leases")
    b.series(
        "Window and in flight",
        "The scheduler's AIMD window of each worker (how many it may hold) and what it holds.",
        Q(sn.WORKER_WINDOW.name, "{{worker}} window"),
        Q(sn.WORKER_IN_FLIGHT.name, "{{worker}} in flight"),
    )
    b.series(
        "Lease expiries",
        "Leases lost in the last 5 minutes because a worker went quiet (its requests went "
        "back to the queue).",
        Q(f"sum by (worker) (increase({sn.WORKER_LEASE_EXPIRIES.total}[5m]))", "{{worker}}"),
    )
    b.stat(
        "Workers attached",
        "Lease streams open.",
        Q(sn.WORKERS.name, "workers"),
    )
    return b.builder.build()


# ------------------------------------------------------------------ broker


def broker() -> DashboardModel:
    b = _Board(
        "tidegate-broker",
        "tidegate / broker",
        "The commit log, lite-topics and delivery.",
    )
    b.row("Commit log")
    b.series(
        "Appends and records per second",
        "Log appends (one write each, shared by concurrent publishes) and the records in them.",
        Q(_rate(bn.BROKER_LOG_APPENDS.total), "appends"),
        Q(_rate(bn.BROKER_LOG_RECORDS.total), "records"),
        Q(_rate(bn.BROKER_PUBLISHED.total), "messages published"),
        unit="ops",
    )
    b.series(
        "fsync latency",
        "p50 and p99 of the commit log's fsync calls.",
        Q(_quantile(0.5, bn.BROKER_FSYNC_SECONDS), "p50"),
        Q(_quantile(0.99, bn.BROKER_FSYNC_SECONDS), "p99"),
        unit="s",
    )
    b.series(
        "Log size",
        "Bytes in the commit log (retention and reclaim shrink it).",
        Q(bn.BROKER_LOG_BYTES.name, "log bytes"),
        unit="bytes",
    )
    b.series(
        "Bytes appended and fsyncs per second",
        "Write load on the disk.",
        Q(_rate(bn.BROKER_LOG_APPENDED_BYTES.total), "bytes/s"),
        Q(_rate(bn.BROKER_LOG_FSYNCS.total), "fsyncs/s"),
    )
    b.row("Lite-topics and delivery")
    b.series(
        "Lite-topics live",
        "Queues held (nearly all lite-topics), and per tenant where a quota counts them.",
        Q(bn.BROKER_QUEUES.name, "all"),
        Q(bn.BROKER_TENANT_LITE_TOPICS.name, "{{tenant}}"),
    )
    b.series(
        "Lite-topics created and expired per second",
        "New lite-topics, and idle ones removed after their TTL.",
        Q(_rate(bn.BROKER_QUEUES_CREATED.total), "created"),
        Q(_rate(bn.BROKER_QUEUES_EXPIRED.total), "expired"),
        unit="ops",
    )
    b.series(
        "Ready-set sizes",
        "Queues with something to deliver, over all consumers and in the largest one.",
        Q(bn.BROKER_READY_QUEUES.name, "all consumers"),
        Q(bn.BROKER_READY_QUEUES_MAX.name, "largest"),
    )
    b.series(
        "Consumer lag",
        "Messages appended but not yet delivered to plain subscriptions.",
        Q(bn.BROKER_CONSUMER_LAG.name, "messages"),
    )
    b.series(
        "Consumers and subscriptions",
        "Subscribe streams open, and the queues they subscribe.",
        Q(bn.BROKER_CONSUMERS.name, "consumers"),
        Q(bn.BROKER_SUBSCRIPTIONS.name, "subscriptions"),
        Q(bn.BROKER_SUBSCRIBED_QUEUES.name, "queues subscribed"),
    )
    return b.builder.build()


DASHBOARDS: dict[str, Callable[[], DashboardModel]] = {
    "tidegate-fairness.json": fairness,
    "tidegate-latency.json": latency,
    "tidegate-fleet.json": fleet,
    "tidegate-broker.json": broker,
}


def generate() -> dict[str, str]:
    """File name -> the JSON text committed in dashboards/json (stable: sorted keys)."""
    return {
        name: json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        for name, build in DASHBOARDS.items()
    }
