"""Line the figures up: one row per metric and durability tier, ratios, targets, table.

Pure: figures in, rows / JSON / a rich table / Markdown out. A ratio is
"how many times better tidegate is" than a peer: ours / theirs for a
throughput, theirs / ours for memory and latency, so > 1 always means
tidegate is ahead. A ratio is only ever taken between figures of the same
metric at the same tier.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from rich.table import Table

from benchmarks.peers.results import DURABILITY, Figure, Metric, System, Tier

__all__ = [
    "PEERS",
    "TARGETS",
    "Row",
    "Target",
    "TargetResult",
    "advantage",
    "check_targets",
    "cpu_per_op",
    "cpu_table",
    "durability_table",
    "format_value",
    "markdown",
    "rich_table",
    "rows",
]

PEERS = (System.REDIS, System.JETSTREAM)
_NAMES = {System.TIDEGATE: "tidegate", System.REDIS: "Redis", System.JETSTREAM: "JetStream"}


def advantage(metric: Metric, ours: float, theirs: float) -> float | None:
    """How many times better ``ours`` is than ``theirs`` (None when undefined)."""
    if metric.higher_is_better:
        return ours / theirs if theirs > 0 else None
    return theirs / ours if ours > 0 else None


@dataclass(frozen=True, slots=True)
class Row:
    """One metric at one tier, with the figure each system produced (if any)."""

    metric: Metric
    tier: Tier
    figures: Mapping[System, Figure]

    def ratio(self, peer: System) -> float | None:
        ours = self.figures.get(System.TIDEGATE)
        theirs = self.figures.get(peer)
        if ours is None or theirs is None:
            return None
        return advantage(self.metric, ours.value, theirs.value)


def rows(figures: Iterable[Figure]) -> list[Row]:
    """Group figures by (metric, tier), in the order of ``Metric`` then ``Tier``.

    Two figures for the same system, metric and tier are a caller's bug.
    """
    grouped: dict[tuple[Metric, Tier], dict[System, Figure]] = {}
    for figure in figures:
        cell = grouped.setdefault((figure.metric, figure.tier), {})
        if figure.system in cell:
            raise ValueError(
                f"two figures for {figure.system.value} {figure.metric.value} at tier "
                f"{figure.tier.value}; each system has one per metric and tier"
            )
        cell[figure.system] = figure
    metrics = list(Metric)
    tiers = list(Tier)
    return [
        Row(metric, tier, MappingProxyType(cell))
        for (metric, tier), cell in sorted(
            grouped.items(), key=lambda kv: (metrics.index(kv[0][0]), tiers.index(kv[0][1]))
        )
    ]


@dataclass(frozen=True, slots=True)
class Target:
    """tidegate must be at least ``at_least`` times better than ``peer`` on this row."""

    metric: Metric
    tier: Tier
    peer: System
    at_least: float

    @property
    def name(self) -> str:
        return f"{self.metric.label} ({self.tier.value}) >= {self.at_least:g}x {_NAMES[self.peer]}"


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: Target
    ratio: float | None

    @property
    def met(self) -> bool | None:
        """None when the row was not measured."""
        return None if self.ratio is None else self.ratio >= self.target.at_least

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target.name,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "met": self.met,
        }


# The targets: >= Redis on batched produce and consume at comparable
# durability (both tiers), >= 10x less memory per idle session topic than a
# Redis stream, acknowledged one-at-a-time publish >= JetStream's.
TARGETS = (
    Target(Metric.PRODUCE, Tier.WINDOW, System.REDIS, 1.0),
    Target(Metric.PRODUCE, Tier.FSYNC, System.REDIS, 1.0),
    Target(Metric.CONSUME, Tier.WINDOW, System.REDIS, 1.0),
    Target(Metric.CONSUME, Tier.FSYNC, System.REDIS, 1.0),
    Target(Metric.TOPIC_MEMORY, Tier.WINDOW, System.REDIS, 10.0),
    Target(Metric.PUBLISH_ONE, Tier.WINDOW, System.JETSTREAM, 1.0),
)


def check_targets(table: Sequence[Row], targets: Sequence[Target] = TARGETS) -> list[TargetResult]:
    by_key = {(r.metric, r.tier): r for r in table}
    results = []
    for target in targets:
        row = by_key.get((target.metric, target.tier))
        results.append(TargetResult(target, None if row is None else row.ratio(target.peer)))
    return results


def format_value(figure: Figure | None) -> str:
    """A cell: the value in its unit, ``*`` when a time bound cut the run short."""
    if figure is None:
        return "-"
    unit = figure.metric.unit
    value = figure.value
    if unit == "ms":
        text = f"{value:,.2f} ms"
    elif unit == "B/topic":
        text = f"{value:,.0f} B"
    else:
        text = f"{value:,.0f}/s"
    return text if figure.complete else text + "*"


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _cells(row: Row) -> list[str]:
    return [
        row.metric.label,
        row.tier.value,
        *(format_value(row.figures.get(s)) for s in (System.TIDEGATE, *PEERS)),
        *(_ratio_text(row.ratio(p)) for p in PEERS),
    ]


_HEADERS = ["workload", "tier", "tidegate", "Redis", "JetStream", "vs Redis", "vs JetStream"]


def rich_table(table: Sequence[Row], title: str) -> Table:
    out = Table(title=title, caption=_CAPTION)
    for i, header in enumerate(_HEADERS):
        out.add_column(header, justify="left" if i < 2 else "right")
    for row in table:
        out.add_row(*_cells(row))
    return out


_CAPTION = (
    "vs X = how many times better tidegate is (throughput: ours/theirs; "
    "memory, latency: theirs/ours); * = cut short by its time bound; "
    "repeated rows show the median run"
)


def cpu_per_op(figure: Figure) -> tuple[float, float] | None:
    """(server, client) CPU microseconds per operation of a throughput figure.

    None for a latency or memory figure, or one without CPU details. Both
    sides share two cores, so a side whose CPU time is close to the wall
    time is the one that limits the figure.
    """
    server = figure.details.get("server_cpu_s")
    client = figure.details.get("client_cpu_s")
    if not figure.metric.higher_is_better or server is None or client is None:
        return None
    if figure.count == 0:
        return None
    return (server / figure.count * 1e6, client / figure.count * 1e6)


def _cpu_text(figure: Figure | None) -> str:
    cost = None if figure is None else cpu_per_op(figure)
    return "-" if cost is None else f"{cost[0]:,.0f} / {cost[1]:,.0f}"


def cpu_table(table: Sequence[Row]) -> list[list[str]]:
    """Rows of (workload, tier, server / client CPU µs per op for each system)."""
    return [
        [row.metric.label, row.tier.value]
        + [_cpu_text(row.figures.get(s)) for s in (System.TIDEGATE, *PEERS)]
        for row in table
        if row.metric.higher_is_better
    ]


def durability_table(unavailable: Mapping[tuple[System, Tier], str]) -> list[list[str]]:
    """Rows of (tier, setting per system); ``unavailable`` says why a cell did not run."""
    out = []
    for tier in Tier:
        cells = [tier.value]
        for system in (System.TIDEGATE, *PEERS):
            reason = unavailable.get((system, tier))
            cells.append(f"not run: {reason}" if reason else DURABILITY[(system, tier)])
        out.append(cells)
    return out


def markdown(table: Sequence[Row], unavailable: Mapping[tuple[System, Tier], str]) -> str:
    """The comparison and durability tables as GitHub Markdown (for the README)."""
    lines = ["| " + " | ".join(_HEADERS) + " |", "|" + "---|" * len(_HEADERS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in table]
    lines += ["", _CAPTION + ".", ""]
    heads = ["tier", "tidegate", "Redis", "JetStream"]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(cells) + " |" for cells in durability_table(unavailable)]
    cpu = cpu_table(table)
    if cpu:
        heads = ["CPU µs per op (server / client)", "tier", "tidegate", "Redis", "JetStream"]
        lines += ["", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join(cells) + " |" for cells in cpu]
    return "\n".join(lines) + "\n"
