"""The figures' values, JSON round trip and the parsers of /proc and version text."""

from __future__ import annotations

import ipaddress

import pytest

from benchmarks.peers.results import (
    DURABILITY,
    Figure,
    Metric,
    System,
    Tier,
    combine,
    listening_addresses,
    non_loopback,
    parse_nats_version,
    parse_stat_cpu,
    parse_vm_rss,
    percentile,
    supports_sync_always,
)


def test_percentile_is_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile(samples, 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 99) == 0.0


def test_percentile_refuses_a_q_outside_0_to_100() -> None:
    with pytest.raises(ValueError, match="q is 101"):
        percentile([1.0], 101)


def test_every_system_and_tier_has_its_durability_stated() -> None:
    for system in System:
        for tier in Tier:
            assert DURABILITY[(system, tier)]
    assert "everysec" in DURABILITY[(System.REDIS, Tier.WINDOW)]
    assert "always" in DURABILITY[(System.REDIS, Tier.FSYNC)]
    assert "2 min" in DURABILITY[(System.JETSTREAM, Tier.WINDOW)]
    assert "interval" in DURABILITY[(System.TIDEGATE, Tier.WINDOW)]


def test_metric_direction_and_units() -> None:
    assert Metric.PRODUCE.higher_is_better
    assert Metric.TOPIC_CREATE.higher_is_better
    assert not Metric.TOPIC_MEMORY.higher_is_better
    assert not Metric.FANIN_P99.higher_is_better
    assert Metric.TOPIC_MEMORY.unit == "B/topic"
    assert Metric.FANIN_P50.unit == "ms"
    assert all(m.label for m in Metric)


def test_figure_round_trips_through_json() -> None:
    figure = Figure(
        System.REDIS,
        Metric.PUBLISH_ONE,
        Tier.FSYNC,
        value=3206.7,
        count=1000,
        seconds=0.3118,
        complete=False,
        details={"p50_ms": 0.305, "p99_ms": 0.467},
    )
    data = figure.to_json()
    assert data["durability"] == "appendfsync always"
    assert data["unit"] == "msg/s"
    assert Figure.from_json(data) == Figure(
        System.REDIS,
        Metric.PUBLISH_ONE,
        Tier.FSYNC,
        value=3206.7,
        count=1000,
        seconds=0.312,  # to_json rounds seconds to the millisecond
        complete=False,
        details={"p50_ms": 0.305, "p99_ms": 0.467},
    )


def test_figure_details_cannot_change_after_the_fact() -> None:
    details = {"p50_ms": 1.0}
    figure = Figure(System.TIDEGATE, Metric.FANIN_P50, Tier.WINDOW, 1.0, 1, 1.0, details=details)
    details["p50_ms"] = 9.0
    assert figure.details["p50_ms"] == 1.0
    with pytest.raises(TypeError):
        figure.details["p50_ms"] = 2.0  # type: ignore[index]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_figure_refuses_a_value_that_is_not_a_finite_non_negative_number(value: float) -> None:
    with pytest.raises(ValueError, match="finite number >= 0"):
        Figure(System.TIDEGATE, Metric.PRODUCE, Tier.WINDOW, value, 1, 1.0)


def test_figure_from_json_names_bad_details() -> None:
    data = Figure(System.TIDEGATE, Metric.PRODUCE, Tier.WINDOW, 1.0, 1, 1.0).to_json()
    data["details"] = [1, 2]
    with pytest.raises(TypeError, match="details is"):
        Figure.from_json(data)


def test_parse_vm_rss_reads_kilobytes_as_bytes() -> None:
    status = "Name:\tredis-server\nVmPeak:\t  999 kB\nVmRSS:\t   10240 kB\nThreads:\t5\n"
    assert parse_vm_rss(status) == 10240 * 1024


def test_parse_vm_rss_without_the_line_says_so() -> None:
    with pytest.raises(ValueError, match="VmRSS"):
        parse_vm_rss("Name:\tzombie\n")


def test_parse_stat_cpu_counts_from_the_last_parenthesis() -> None:
    # A command name with spaces and a ')' must not shift the fields.
    rest = "S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1"
    assert parse_stat_cpu(f"4242 (a) b) {rest}", 100) == pytest.approx(3.0)
    assert parse_stat_cpu(f"4242 (redis-server) {rest}", 100) == pytest.approx(3.0)


def test_parse_stat_cpu_refuses_short_text() -> None:
    with pytest.raises(ValueError, match="too few fields"):
        parse_stat_cpu("4242 (x) S 1 2", 100)


def test_nats_version_and_sync_always_support() -> None:
    assert parse_nats_version("nats-server: v2.9.10\n") == (2, 9, 10)
    assert parse_nats_version("v2.10.3") == (2, 10, 3)
    assert not supports_sync_always((2, 9, 10))
    assert supports_sync_always((2, 10, 0))
    assert supports_sync_always((3, 0, 0))
    with pytest.raises(ValueError, match="no version number"):
        parse_nats_version("command not found")


def test_non_loopback_keeps_only_addresses_reachable_from_outside() -> None:
    assert non_loopback(["127.0.0.1", "::1", "::ffff:127.0.0.1", "127.0.0.53"]) == []
    assert non_loopback(["0.0.0.0", "127.0.0.1", "::", "10.0.0.5"]) == ["0.0.0.0", "::", "10.0.0.5"]


_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0
   1: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1 0
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0
"""
_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:86BF 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0
   1: 00000000000000000000000001000000:1A0B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0
"""  # noqa: E501


def test_listening_addresses_are_the_listening_sockets_of_the_given_inodes() -> None:
    assert listening_addresses(_TCP, {111, 333}) == ["127.0.0.1"]  # 333 is not listening
    assert listening_addresses(_TCP, {222}) == ["0.0.0.0"]
    assert listening_addresses(_TCP, set()) == []
    found = listening_addresses(_TCP6, {444, 555})
    assert [ipaddress.ip_address(a) for a in found] == [
        ipaddress.ip_address("::ffff:127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert non_loopback(found) == []


def test_combine_keeps_the_median_run_and_its_spread() -> None:
    runs = [
        Figure(System.REDIS, Metric.PRODUCE, Tier.WINDOW, v, 10, 1.0, True, {"run": v})
        for v in (80.0, 30.0, 60.0)
    ]
    other = Figure(System.TIDEGATE, Metric.PRODUCE, Tier.WINDOW, 5.0, 10, 1.0)
    combined = combine([runs[0], other, runs[1], runs[2]])
    assert [f.system for f in combined] == [System.REDIS, System.TIDEGATE]
    median = combined[0]
    assert median.value == 60.0
    assert median.details == {"run": 60.0, "runs": 3.0, "min": 30.0, "max": 80.0}
    assert combined[1] is other  # a single run passes through untouched


def test_combine_is_complete_only_if_every_run_was() -> None:
    runs = [
        Figure(System.REDIS, Metric.CONSUME, Tier.FSYNC, 1.0, 10, 1.0, complete=True),
        Figure(System.REDIS, Metric.CONSUME, Tier.FSYNC, 2.0, 5, 1.0, complete=False),
    ]
    (only,) = combine(runs)
    assert only.value == 1.0  # the lower middle of an even count
    assert not only.complete
