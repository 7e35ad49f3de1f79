"""The demo's console: a live per-tenant table and the closing summary (rich).

Pure rendering: figures in, renderables out. The live fairness index is
Jain's index over the tenants backlogged right now (requests waiting in the
scheduler), of the work (tokens) dispatched to each in the last
``window_s`` seconds divided by its weight: 1.0 is a split exactly by
weight. Dispatched work shows the scheduler's choices as it makes them;
served work would lag them by the length of a request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tidegate.loadgen import TenantLive

__all__ = ["jain", "live_jain", "live_table", "percentile", "summary_table"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def jain(values: Sequence[float]) -> float | None:
    square = sum(v * v for v in values)
    if not values or square <= 0:
        return None
    return sum(values) ** 2 / (len(values) * square)


def live_jain(
    tenants: Mapping[str, TenantLive], weights: Mapping[str, float], now: float, window_s: float
) -> float | None:
    """Jain's index of weight-normalised recent dispatches over the backlogged tenants."""
    backlogged = [name for name, t in tenants.items() if t.queued > 0]
    if len(backlogged) < 2:
        return None
    since = now - window_s
    xs = []
    for name in backlogged:
        given = sum(tokens for at, tokens in tenants[name].dispatched if at >= since)
        xs.append(given / weights.get(name, 1.0))
    return jain(xs)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _share_cells(
    tenants: Mapping[str, TenantLive], weights: Mapping[str, float]
) -> dict[str, tuple[str, str]]:
    total = sum(t.served_tokens for t in tenants.values()) or 1
    total_weight = sum(weights.get(n, 1.0) for n in tenants) or 1.0
    return {
        name: (
            f"{100.0 * t.served_tokens / total:.0f}%",
            f"{100.0 * weights.get(name, 1.0) / total_weight:.0f}%",
        )
        for name, t in tenants.items()
    }


def live_table(
    tenants: Mapping[str, TenantLive],
    weights: Mapping[str, float],
    *,
    now: float,
    done: int,
    total: int,
    workers: str,
    window_s: float = 10.0,
) -> Group:
    table = Table(title=f"tidegate demo: t = {now:5.1f} s, {done}/{total} requests done")
    for name, justify in (
        ("tenant", "left"),
        ("weight", "right"),
        ("admitted", "right"),
        ("refused", "right"),
        ("queued", "right"),
        ("running", "right"),
        ("served tokens", "right"),
        ("p99 wait", "right"),
        ("share / weight", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    shares = _share_cells(tenants, weights)
    for name, t in tenants.items():
        share, weight_share = shares[name]
        table.add_row(
            name,
            f"{weights.get(name, 1.0):g}",
            str(t.admitted),
            str(t.refused),
            str(t.queued),
            str(t.running),
            f"{t.served_tokens:,}",
            _seconds(percentile(t.waits, 99)),
            f"{share} / {weight_share}",
        )
    index = live_jain(tenants, weights, now, window_s)
    line = Text.assemble(
        ("fairness (Jain, work dispatched in the last 10 s to the tenants waiting now): ", "bold"),
        "-  (fewer than two tenants waiting)" if index is None else f"{index:.3f}",
        f"    workers: {workers}",
    )
    return Group(table, line)


def summary_table(
    summary: Mapping[str, Any],
    predicted: Mapping[str, Any] | None,
    weights: Mapping[str, float],
) -> Group:
    """The closing table: measured per tenant, and the simulator's prediction beside."""
    table = Table(title="Summary (measured on the wall clock; simulator's prediction in brackets)")
    for name in ("tenant", "weight", "admitted", "refused", "completed", "served tokens"):
        table.add_column(name, justify="left" if name == "tenant" else "right")
    table.add_column("wait p50", justify="right")
    table.add_column("wait p99", justify="right")
    sim_tenants: Mapping[str, Any] = (predicted or {}).get("tenants", {})
    for name, t in summary["tenants"].items():
        sim = sim_tenants.get(name, {})

        def both(key: str, fmt: str, t: Mapping[str, Any] = t, sim: Mapping[str, Any] = sim) -> str:
            mine = t.get(key)
            text = "-" if mine is None else format(mine, fmt)
            if sim.get(key) is not None:
                text += f" ({format(sim[key], fmt)})"
            return text

        table.add_row(
            name,
            f"{weights.get(name, 1.0):g}",
            str(t["admitted"]),
            both("rejections", "d"),
            both("completed", "d"),
            both("served_tokens", ",d"),
            both("wait_p50_s", ".2f"),
            both("wait_p99_s", ".2f"),
        )
    jain_now = summary.get("jain_index")
    jain_sim = (predicted or {}).get("jain_index")
    text = Text.assemble(
        (
            "Fairness over the run (Jain's index of weight-normalised service while two or more "
            "tenants were backlogged; 1.0 = split exactly by weight): ",
            "bold",
        ),
        "-" if jain_now is None else f"{jain_now:.3f}",
        "" if jain_sim is None else f"  (simulator: {jain_sim:.3f})",
    )
    return Group(table, text)
