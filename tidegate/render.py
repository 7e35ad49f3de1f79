"""Dashboards to pictures without Grafana: each panel's queries over a time range,
plotted with matplotlib, one PNG per panel.

``tidegate dashboards render --prometheus URL --out DIR`` writes
``DIR/<dashboard uid>/<NN>-<panel title>.png``. The queries are the
committed JSON's (:mod:`tidegate.panels`), run as Grafana would run them:
its variables filled in (a rate window of four steps, at least a minute),
series named by the panel's legend format. A time series panel is a line
per series; a stat panel shows the last value of each series large, with
its line beneath. A panel whose queries return nothing says "no data".
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.errors import UsageError
from tidegate.panels import Panel, expand, legend, load_dashboards
from tidegate.prometheus import PrometheusApi, Series

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PanelData", "fetch_panel", "render_dashboards", "render_panel"]

_POINTS = 200  # points per series when no step is given


@dataclass(frozen=True, slots=True)
class PanelData:
    """A panel's series, each named as its legend says."""

    panel: Panel
    series: tuple[tuple[str, Series], ...]


def render_dashboards(
    prometheus: str,
    out: Path,
    directory: Path | None = None,
    *,
    minutes: float = 15.0,
    step_s: float | None = None,
    now: Callable[[], float] = time.time,
) -> list[Path]:
    """Every panel of every dashboard in ``directory`` to ``out``; returns the files."""
    if not minutes > 0:
        raise UsageError(f"--minutes {minutes}: the range must be > 0")
    api = PrometheusApi(prometheus)
    end = now()
    start = end - minutes * 60.0
    step = step_s or max(1.0, (end - start) / _POINTS)
    written = []
    for dashboard in load_dashboards(directory):
        folder = out / dashboard.uid
        folder.mkdir(parents=True, exist_ok=True)
        for index, panel in enumerate(dashboard.panels, 1):
            data = fetch_panel(api, panel, start, end, step)
            path = folder / f"{index:02d}-{_slug(panel.title)}.png"
            render_panel(data, path, title=f"{dashboard.title} — {panel.title}")
            written.append(path)
    return written


def fetch_panel(
    api: PrometheusApi, panel: Panel, start: float, end: float, step: float
) -> PanelData:
    rate = f"{max(60, math.ceil(4 * step))}s"
    series: list[tuple[str, Series]] = []
    for query in panel.queries:
        expr = expand(
            query.expr,
            rate_interval=rate,
            interval=f"{math.ceil(step)}s",
            range_=f"{math.ceil(end - start)}s",
        )
        found = api.query_range(expr, start, end, step)
        series.extend((legend(query.legend_format, s.labels), s) for s in found)
    return PanelData(panel, tuple(series))


def render_panel(data: PanelData, path: Path, *, title: str) -> None:
    """One PNG of ``data`` (matplotlib's Agg canvas: no display, no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional
        from matplotlib.figure import Figure  # noqa: PLC0415
        from matplotlib.ticker import FuncFormatter  # noqa: PLC0415
    except ImportError:
        raise UsageError("rendering needs matplotlib: pip install 'tidegate[dashboards]'") from None

    figure = Figure(figsize=(8, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_title(title, fontsize=10, loc="left")
    drawn = [(name, s) for name, s in data.series if s.finite]
    if not drawn:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
        axes.set_xticks([])
        axes.set_yticks([])
    else:
        for name, series in drawn:
            times = [t for t, _ in series.points]
            axes.plot(times, [v for _, v in series.points], label=name or "value", linewidth=1.4)
        axes.xaxis.set_major_formatter(FuncFormatter(_clock_time))
        axes.set_xlabel("UTC", fontsize=8)
        axes.grid(visible=True, alpha=0.3)
        axes.tick_params(labelsize=8)
        _unit(axes, data.panel.unit)
        if data.panel.low is not None or data.panel.high is not None:
            axes.set_ylim(bottom=data.panel.low, top=data.panel.high)
        if data.panel.kind == "stat":
            _stat(axes, drawn, data.panel.unit)
        if len(drawn) <= 12:
            axes.legend(fontsize=7, loc="upper left", framealpha=0.6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def _clock_time(x: float, _: object) -> str:
    return dt.datetime.fromtimestamp(x, tz=dt.UTC).strftime("%H:%M:%S")


def _unit(axes: Axes, unit: str) -> None:
    labels = {"s": "seconds", "percentunit": "fraction", "bytes": "bytes", "ops": "per second"}
    if unit in labels:
        axes.set_ylabel(labels[unit], fontsize=8)


def _stat(axes: Axes, drawn: Sequence[tuple[str, Series]], unit: str) -> None:
    """The last value of each series, large, over the lines."""
    lines = []
    for name, series in drawn[:4]:
        last = next((v for _, v in reversed(series.points) if math.isfinite(v)), math.nan)
        shown = f"{last:.1%}" if unit == "percentunit" else f"{last:.3g}"
        lines.append(f"{name}: {shown}" if name else shown)
    axes.text(
        0.98,
        0.92,
        "\n".join(lines),
        ha="right",
        va="top",
        fontsize=16,
        transform=axes.transAxes,
        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none"},
    )


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "panel"
