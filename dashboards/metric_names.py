"""Every metric a tidegate server exports: the broker's and the scheduler's, together.

Each package names its own metrics (:mod:`broker.metric_names`,
:mod:`scheduler.metric_names`), so neither imports a module above it.
Only the dashboards, and the tests that check them, need the union: which
family a series a query names belongs to, and whether the server exports it
at all. This is that union, in one tuple.
"""

from __future__ import annotations

from broker import metric_names as broker_names
from broker.metric_names import MetricSpec
from scheduler import metric_names as scheduler_names

__all__ = ["ALL", "by_name"]

ALL: tuple[MetricSpec, ...] = scheduler_names.SPECS + broker_names.SPECS

_BY_NAME = {spec.name: spec for spec in ALL}
_BY_SERIES = {series: spec for spec in ALL for series in spec.series}


def by_name(series: str) -> MetricSpec | None:
    """The family a family or series name belongs to (``X_total``, ``X_bucket`` too)."""
    return _BY_NAME.get(series) or _BY_SERIES.get(series)
