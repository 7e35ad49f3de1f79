"""Rows, ratios, targets and the rendered tables."""

from __future__ import annotations

import pytest
from rich.console import Console

from benchmarks.peers.report import (
    TARGETS,
    Target,
    advantage,
    check_targets,
    cpu_per_op,
    cpu_table,
    durability_table,
    format_value,
    markdown,
    rich_table,
    rows,
)
from benchmarks.peers.results import Figure, Metric, System, Tier


def fig(
    system: System, metric: Metric, tier: Tier, value: float, *, complete: bool = True
) -> Figure:
    return Figure(system, metric, tier, value, count=100, seconds=1.0, complete=complete)


def test_advantage_is_above_one_when_tidegate_is_ahead_whatever_the_direction() -> None:
    assert advantage(Metric.PRODUCE, 200.0, 100.0) == 2.0  # twice the throughput
    assert advantage(Metric.TOPIC_MEMORY, 400.0, 4000.0) == 10.0  # a tenth of the memory
    assert advantage(Metric.FANIN_P99, 4.0, 2.0) == 0.5  # twice the latency
    assert advantage(Metric.PRODUCE, 1.0, 0.0) is None
    assert advantage(Metric.FANIN_P50, 0.0, 1.0) is None


def test_rows_group_by_metric_and_tier_in_a_stable_order() -> None:
    figures = [
        fig(System.REDIS, Metric.CONSUME, Tier.WINDOW, 10),
        fig(System.TIDEGATE, Metric.PRODUCE, Tier.FSYNC, 5),
        fig(System.TIDEGATE, Metric.PRODUCE, Tier.WINDOW, 7),
        fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 14),
        fig(System.JETSTREAM, Metric.PRODUCE, Tier.WINDOW, 3.5),
    ]
    table = rows(figures)
    assert [(r.metric, r.tier) for r in table] == [
        (Metric.PRODUCE, Tier.WINDOW),
        (Metric.PRODUCE, Tier.FSYNC),
        (Metric.CONSUME, Tier.WINDOW),
    ]
    first = table[0]
    assert first.ratio(System.REDIS) == 0.5
    assert first.ratio(System.JETSTREAM) == 2.0
    assert table[1].ratio(System.REDIS) is None  # no Redis figure at that tier
    assert table[2].ratio(System.REDIS) is None  # no tidegate figure


def test_a_ratio_never_mixes_tiers() -> None:
    table = rows(
        [
            fig(System.TIDEGATE, Metric.PRODUCE, Tier.FSYNC, 5),
            fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 10),
        ]
    )
    assert all(r.ratio(System.REDIS) is None for r in table)


def test_two_figures_for_one_cell_are_refused() -> None:
    with pytest.raises(ValueError, match="two figures for redis produce at tier window"):
        rows(
            [
                fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 1),
                fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 2),
            ]
        )


def test_targets_met_missed_and_unmeasured() -> None:
    table = rows(
        [
            fig(System.TIDEGATE, Metric.PRODUCE, Tier.WINDOW, 120),
            fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 100),
            fig(System.TIDEGATE, Metric.TOPIC_MEMORY, Tier.WINDOW, 500),
            fig(System.REDIS, Metric.TOPIC_MEMORY, Tier.WINDOW, 4328),
        ]
    )
    results = {(r.target.metric, r.target.tier): r for r in check_targets(table)}
    produce = results[(Metric.PRODUCE, Tier.WINDOW)]
    assert produce.ratio == pytest.approx(1.2)
    assert produce.met is True
    memory = results[(Metric.TOPIC_MEMORY, Tier.WINDOW)]
    assert memory.ratio == pytest.approx(8.656)
    assert memory.met is False  # needs 10x
    assert results[(Metric.CONSUME, Tier.WINDOW)].met is None
    assert memory.to_json() == {
        "target": "memory per topic (window) >= 10x Redis",
        "ratio": 8.656,
        "met": False,
    }


def test_the_issue_targets_are_the_ones_checked() -> None:
    assert Target(Metric.TOPIC_MEMORY, Tier.WINDOW, System.REDIS, 10.0) in TARGETS
    assert Target(Metric.PUBLISH_ONE, Tier.WINDOW, System.JETSTREAM, 1.0) in TARGETS
    assert {(t.metric, t.tier) for t in TARGETS if t.peer is System.REDIS} >= {
        (Metric.PRODUCE, Tier.WINDOW),
        (Metric.PRODUCE, Tier.FSYNC),
        (Metric.CONSUME, Tier.WINDOW),
        (Metric.CONSUME, Tier.FSYNC),
    }


def test_format_value_per_unit_and_marks_a_cut_short_run() -> None:
    assert format_value(fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 81020.7)) == "81,021/s"
    assert format_value(fig(System.REDIS, Metric.TOPIC_MEMORY, Tier.WINDOW, 4325.8)) == "4,326 B"
    assert format_value(fig(System.REDIS, Metric.FANIN_P99, Tier.WINDOW, 3.484)) == "3.48 ms"
    cut = fig(System.REDIS, Metric.CONSUME, Tier.WINDOW, 10.0, complete=False)
    assert format_value(cut) == "10/s*"
    assert format_value(None) == "-"


def test_durability_table_says_why_a_cell_did_not_run() -> None:
    reason = "nats-server 2.9.10 has no sync_interval: always (2.10+)"
    table = durability_table({(System.JETSTREAM, Tier.FSYNC): reason})
    assert table[0] == [
        "window",
        "fsync: interval (0.1 s)",
        "appendfsync everysec (~1 s)",
        "default: sync every 2 min",
    ]
    assert table[1][0] == "fsync"
    assert table[1][3] == f"not run: {reason}"


def test_markdown_and_rich_tables_hold_every_row_and_ratio() -> None:
    table = rows(
        [
            fig(System.TIDEGATE, Metric.PRODUCE, Tier.WINDOW, 50_000),
            fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 100_000),
            fig(System.JETSTREAM, Metric.PRODUCE, Tier.WINDOW, 25_000),
        ]
    )
    text = markdown(table, {})
    assert "| produce, batches | window | 50,000/s | 100,000/s | 25,000/s | 0.50x | 2.00x |" in text
    assert "| fsync | fsync: always (group commit) | appendfsync always |" in text
    console = Console(width=200, record=True)
    console.print(rich_table(table, "title"))
    rendered = console.export_text()
    assert "0.50x" in rendered
    assert "2.00x" in rendered


def test_cpu_per_op_for_throughput_figures_only() -> None:
    details = {"server_cpu_s": 2.0, "client_cpu_s": 0.5}
    produce = Figure(System.TIDEGATE, Metric.PRODUCE, Tier.WINDOW, 1.0, 100_000, 1.0, True, details)
    assert cpu_per_op(produce) == (20.0, 5.0)
    latency = Figure(System.TIDEGATE, Metric.FANIN_P50, Tier.WINDOW, 1.0, 100, 1.0, True, details)
    assert cpu_per_op(latency) is None
    assert cpu_per_op(fig(System.REDIS, Metric.PRODUCE, Tier.WINDOW, 1.0)) is None  # no details
    empty = Figure(System.REDIS, Metric.CONSUME, Tier.WINDOW, 0.0, 0, 1.0, False, details)
    assert cpu_per_op(empty) is None


def test_cpu_table_has_a_row_per_throughput_row() -> None:
    details = {"server_cpu_s": 3.0, "client_cpu_s": 1.0}
    table = rows(
        [
            Figure(System.REDIS, Metric.CONSUME, Tier.FSYNC, 9.0, 1000, 1.0, True, details),
            fig(System.TIDEGATE, Metric.CONSUME, Tier.FSYNC, 5.0),
            fig(System.TIDEGATE, Metric.FANIN_P99, Tier.WINDOW, 5.0),
        ]
    )
    assert cpu_table(table) == [["consume + ack", "fsync", "-", "3,000 / 1,000", "-"]]
