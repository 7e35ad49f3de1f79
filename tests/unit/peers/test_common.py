"""Send-time stamps, pacing, deadlines on a fake clock, and figure builders."""

from __future__ import annotations

import pytest

from benchmarks.peers.common import (
    FANIN_BODY_BYTES,
    Deadline,
    due,
    latency_figures,
    payload,
    rate_figure,
    sent_at,
    stamped,
)
from benchmarks.peers.results import Metric, System, Tier


def test_payload_has_the_size_asked_and_is_the_same_every_time() -> None:
    assert len(payload(1024)) == 1024
    assert payload(1024) == payload(1024)
    assert len(set(payload(1024))) == 256


def test_a_stamp_round_trips_in_a_body_of_the_fanin_size() -> None:
    body = stamped(1_700_000_000.123456)
    assert len(body) == FANIN_BODY_BYTES
    assert sent_at(body) == 1_700_000_000.123456


def test_due_spaces_messages_evenly() -> None:
    assert due(10.0, 0, 1000) == 10.0
    assert due(10.0, 500, 1000) == pytest.approx(10.5)


def test_deadline_on_a_fake_clock() -> None:
    now = [100.0]
    deadline = Deadline.after(5.0, clock=lambda: now[0])
    assert deadline.left() == 5.0
    assert not deadline.passed()
    now[0] = 104.0
    assert deadline.left() == pytest.approx(1.0)
    now[0] = 105.0
    assert deadline.passed()
    assert deadline.left() == 0.0


def test_rate_figure_counts_per_second_and_marks_a_short_run() -> None:
    figure = rate_figure(
        System.TIDEGATE,
        Metric.PUBLISH_ONE,
        Tier.FSYNC,
        done=500,
        planned=1000,
        seconds=2.0,
        latencies_ms=[1.0, 2.0, 3.0, 4.0],
        details={"status_rpc_per_s": 900.0},
    )
    assert figure.value == 250.0
    assert not figure.complete
    assert figure.details == {"status_rpc_per_s": 900.0, "p50_ms": 2.0, "p99_ms": 4.0}


def test_latency_figures_give_p50_and_p99_over_what_was_delivered() -> None:
    latencies = [float(x) for x in range(1, 1001)]
    p50, p99 = latency_figures(
        System.REDIS, Tier.WINDOW, latencies, planned=2000, seconds=10.0, details={"x": 1.0}
    )
    assert (p50.metric, p50.value) == (Metric.FANIN_P50, 500.0)
    assert (p99.metric, p99.value) == (Metric.FANIN_P99, 990.0)
    assert not p99.complete  # half of what was sent came back in time
    assert p99.details == {"delivered": 1000.0, "x": 1.0}
