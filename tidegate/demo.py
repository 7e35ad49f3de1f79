"""``tidegate demo``: what ``make demo`` runs.

Until the serving path exists, the demo is a short tour of the broker core:
it publishes a batch of requests, creates many per-session lite-topics,
crashes a writer and recovers its log, and says in plain words what each
figure means. It needs no flags and finishes in well under a minute.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from tidegate.bench import run_bench

__all__ = ["run"]

_STEPS: tuple[tuple[str, dict[str, int], str], ...] = (
    (
        "produce",
        {"count": 100_000, "size": 1024, "batch": 100},
        "1 KiB requests appended to the durable log, 100 per batch",
    ),
    (
        "consume",
        {"count": 100_000, "size": 1024, "batch": 100},
        "the same requests leased and acknowledged by a consumer group",
    ),
    (
        "lite-topics",
        {"count": 200_000},
        "chat sessions, each with its own ordered, resumable lite-topic",
    ),
    (
        "recovery",
        {"log_bytes": 64 * 1024 * 1024},
        "a writer killed with SIGKILL, then its store reopened",
    ),
)


def _describe(name: str, figures: dict[str, object]) -> str:
    if name == "produce":
        return (
            f"{figures['msgs_per_s']:,.0f} msgs/s ({figures['mb_per_s']} MB/s), "
            f"p99 batch ack {figures['publish_p99_ms']} ms"
        )
    if name == "consume":
        return f"{figures['msgs_per_s']:,.0f} msgs/s, p99 lease {figures['deliver_p99_ms']} ms"
    if name == "lite-topics":
        return (
            f"{figures['count']:,} created at {figures['create_per_s']:,.0f}/s, "
            f"{figures['bytes_per_topic']} bytes of memory each"
        )
    return f"{figures['log_bytes']:,} bytes of log recovered in {figures['recover_s']} s"


def run(args: argparse.Namespace) -> int:
    del args  # the demo takes no options
    console = Console()
    console.print("[bold]tidegate demo[/bold]: the durable broker core on this machine\n")
    table = Table(title="What the broker did", show_lines=False)
    table.add_column("step")
    table.add_column("what")
    table.add_column("result", justify="right")
    for name, options, what in _STEPS:
        with console.status(f"running {name} ..."):
            figures = run_bench(name, {**options, "fsync": "interval"}, in_process=True)
        table.add_row(name, what, _describe(name, figures))
    console.print(table)
    console.print(
        "\nEvery figure was measured just now with fsync 'interval' (bounded loss window "
        "of 0.1 s on power loss, none on a process crash). Run "
        "[bold]tidegate bench NAME --json[/bold] for the raw numbers."
    )
    return 0
