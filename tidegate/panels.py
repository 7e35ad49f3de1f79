"""The panels and queries of Grafana dashboard JSON, read without Grafana.

Pure reading: the renderer (:mod:`tidegate.render`) and the tests that run
every panel's PromQL against a real Prometheus both start here, from the
committed JSON in ``dashboards/json`` (what Grafana would load), not from
the code that generated it.

Grafana fills a few variables into a query before it runs it;
:func:`expand` does the same for the ones the dashboards use
(``$__rate_interval``, ``$__interval``, ``$__range``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidegate.errors import UsageError

__all__ = [
    "Dashboard",
    "Panel",
    "Query",
    "default_directory",
    "expand",
    "legend",
    "load_dashboards",
    "parse_dashboard",
]


@dataclass(frozen=True, slots=True)
class Query:
    ref_id: str
    expr: str
    legend_format: str = ""


@dataclass(frozen=True, slots=True)
class Panel:
    panel_id: int
    title: str
    kind: str  # Grafana's panel type: timeseries, stat, ...
    unit: str
    queries: tuple[Query, ...]
    low: float | None = None  # the axis' fixed ends, when the panel sets them
    high: float | None = None


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    path: Path
    panels: tuple[Panel, ...]


def default_directory() -> Path:
    """``dashboards/json`` of the working directory, else of the source tree."""
    for here in (Path("dashboards/json"), Path(__file__).resolve().parents[1] / "dashboards/json"):
        if here.is_dir():
            return here
    raise UsageError("dashboards/json is not here; pass --dashboards DIR")


def load_dashboards(directory: Path | None = None) -> list[Dashboard]:
    """Every ``*.json`` dashboard of ``directory``, by file name."""
    directory = directory or default_directory()
    paths = sorted(directory.glob("*.json"))
    if not paths:
        raise UsageError(f"{directory}: no dashboard JSON files (*.json)")
    found = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: cannot read a dashboard: {exc}") from None
        found.append(parse_dashboard(data, path))
    return found


def parse_dashboard(data: Mapping[str, Any], path: Path) -> Dashboard:
    if not isinstance(data, Mapping) or not isinstance(data.get("panels"), list):
        raise UsageError(f"{path}: not a Grafana dashboard (no panels list)")
    return Dashboard(
        uid=str(data.get("uid") or path.stem),
        title=str(data.get("title") or path.stem),
        path=path,
        panels=tuple(_panel(p) for p in _walk(data["panels"])),
    )


def _walk(panels: list[Any]) -> Iterator[Mapping[str, Any]]:
    """Panels in order; a row's own panels (collapsed rows keep them inside)."""
    for panel in panels:
        if not isinstance(panel, Mapping):
            continue
        if panel.get("type") == "row":
            yield from _walk(list(panel.get("panels") or []))
        else:
            yield panel


def _panel(panel: Mapping[str, Any]) -> Panel:
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    queries = tuple(
        Query(str(t.get("refId", "")), str(t["expr"]), str(t.get("legendFormat") or ""))
        for t in panel.get("targets") or []
        if isinstance(t, Mapping) and t.get("expr") and not t.get("hide")
    )
    return Panel(
        panel_id=int(panel.get("id") or 0),
        title=str(panel.get("title") or ""),
        kind=str(panel.get("type") or "timeseries"),
        unit=str(defaults.get("unit") or ""),
        queries=queries,
        low=_number(defaults.get("min")),
        high=_number(defaults.get("max")),
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def expand(
    expr: str, *, rate_interval: str = "1m", interval: str = "15s", range_: str = "15m"
) -> str:
    """``expr`` with Grafana's variables filled in, as Grafana would before running it."""
    return (
        expr.replace("$__rate_interval", rate_interval)
        .replace("$__interval", interval)
        .replace("$__range", range_)
    )


_LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    """A series' name as Grafana shows it: ``{{label}}`` filled in, else its labels."""
    if fmt:
        return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt)
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or labels.get("__name__", "")
