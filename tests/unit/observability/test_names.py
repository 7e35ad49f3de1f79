"""Metric names live in one module per package, each once, with the series Prometheus will see."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from broker import metric_names as bn
from dashboards import metric_names as names
from scheduler import metric_names as sn

NAME = re.compile(r"tidegate_(scheduler|broker)_[a-z0-9_]+")


def test_every_spec_is_listed_named_and_unique() -> None:
    specs = [spec.name for spec in names.ALL]
    assert len(specs) == len(set(specs))
    assert len(names.ALL) >= 45
    assert {"tenant", "band", "worker", "reason", "kind", "event"} == bn.LABELS
    for spec in names.ALL:
        assert NAME.fullmatch(spec.name), spec.name
        assert not spec.name.endswith(("_total", "_bucket", "_count", "_sum")), spec.name
        assert spec.help
        assert set(spec.labels) <= bn.LABELS


@pytest.mark.parametrize(
    ("module", "prefix"),
    [(bn, "tidegate_broker_"), (sn, "tidegate_scheduler_")],
    ids=["broker", "scheduler"],
)
def test_each_package_exports_exactly_its_own_specs(module: ModuleType, prefix: str) -> None:
    exported = {
        getattr(module, name)
        for name in module.__all__
        if isinstance(getattr(module, name), bn.MetricSpec)
    }
    assert exported == set(module.SPECS)
    assert all(spec.name.startswith(prefix) for spec in module.SPECS)


def test_all_is_both_packages_specs() -> None:
    assert names.ALL == sn.SPECS + bn.SPECS
    assert not set(sn.SPECS) & set(bn.SPECS)


def test_no_label_could_carry_a_request_or_session() -> None:
    for spec in names.ALL:
        assert not {"session", "request", "request_id", "lite_topic"} & set(spec.labels)


def _imports(module: ModuleType) -> set[str]:
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_names_modules_are_pure_data() -> None:
    """Anything may import the names without pulling in Prometheus, the store or
    a package the dependency rules keep out (the scheduler's take only the
    broker's vocabulary)."""
    stdlib = sys.stdlib_module_names | {"__future__"}
    assert {name.partition(".")[0] for name in _imports(bn)} <= stdlib
    scheduler_imports = _imports(sn) - {"broker.metric_names"}
    assert {name.partition(".")[0] for name in scheduler_imports} <= stdlib


def test_series_names_follow_the_kind() -> None:
    assert sn.TENANT_ADMITTED.series == ("tidegate_scheduler_admitted_total",)
    assert sn.TENANT_WAIT.series == (
        "tidegate_scheduler_wait_seconds_bucket",
        "tidegate_scheduler_wait_seconds_sum",
        "tidegate_scheduler_wait_seconds_count",
    )
    assert sn.TENANT_QUEUED.series == ("tidegate_scheduler_queued",)
    with pytest.raises(ValueError, match="is a gauge, not a counter"):
        _ = sn.TENANT_QUEUED.total
    with pytest.raises(ValueError, match="is a counter, not a histogram"):
        _ = sn.TENANT_ADMITTED.bucket


def test_by_name_finds_families_from_any_of_their_series() -> None:
    assert names.by_name("tidegate_broker_fsync_seconds_bucket") is bn.BROKER_FSYNC_SECONDS
    assert names.by_name("tidegate_broker_log_appends_total") is bn.BROKER_LOG_APPENDS
    assert names.by_name("tidegate_scheduler_fairness_jain") is sn.FAIRNESS_JAIN
    assert names.by_name("tidegate_scheduler_queued_total") is None  # a gauge has no _total
    assert names.by_name("tidegate_nothing") is None


def test_buckets_increase() -> None:
    for bounds in (sn.WAIT_BUCKETS, sn.TTFT_BUCKETS, bn.FSYNC_BUCKETS):
        assert list(bounds) == sorted(set(bounds))
