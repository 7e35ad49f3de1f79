"""Metric names live in one module, each once, with the series Prometheus will see."""

from __future__ import annotations

import re

import pytest

from tidegate import metrics as m

NAME = re.compile(r"tidegate_(scheduler|broker)_[a-z0-9_]+")


def test_every_spec_is_listed_named_and_unique() -> None:
    names = [spec.name for spec in m.ALL]
    assert len(names) == len(set(names))
    assert len(m.ALL) >= 45
    for spec in m.ALL:
        assert NAME.fullmatch(spec.name), spec.name
        assert not spec.name.endswith(("_total", "_bucket", "_count", "_sum")), spec.name
        assert spec.help
        assert set(spec.labels) <= {m.TENANT, m.BAND, m.WORKER, m.REASON, m.KIND, m.EVENT}
    exported = {
        getattr(m, name) for name in m.__all__ if isinstance(getattr(m, name), m.MetricSpec)
    }
    assert exported == set(m.ALL)


def test_no_label_could_carry_a_request_or_session() -> None:
    for spec in m.ALL:
        assert not {"session", "request", "request_id", "lite_topic"} & set(spec.labels)


def test_series_names_follow_the_kind() -> None:
    assert m.TENANT_ADMITTED.series == ("tidegate_scheduler_admitted_total",)
    assert m.TENANT_WAIT.series == (
        "tidegate_scheduler_wait_seconds_bucket",
        "tidegate_scheduler_wait_seconds_sum",
        "tidegate_scheduler_wait_seconds_count",
    )
    assert m.TENANT_QUEUED.series == ("tidegate_scheduler_queued",)
    with pytest.raises(ValueError, match="is a gauge, not a counter"):
        _ = m.TENANT_QUEUED.total
    with pytest.raises(ValueError, match="is a counter, not a histogram"):
        _ = m.TENANT_ADMITTED.bucket


def test_by_name_finds_families_from_any_of_their_series() -> None:
    assert m.by_name("tidegate_broker_fsync_seconds_bucket") is m.BROKER_FSYNC_SECONDS
    assert m.by_name("tidegate_broker_log_appends_total") is m.BROKER_LOG_APPENDS
    assert m.by_name("tidegate_scheduler_fairness_jain") is m.FAIRNESS_JAIN
    assert m.by_name("tidegate_scheduler_queued_total") is None  # a gauge has no _total
    assert m.by_name("tidegate_nothing") is None


def test_buckets_increase() -> None:
    for bounds in (m.WAIT_BUCKETS, m.TTFT_BUCKETS, m.FSYNC_BUCKETS):
        assert list(bounds) == sorted(set(bounds))
