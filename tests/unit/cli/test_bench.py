"""`tidegate bench`: options, refusals and the pure helpers (no server is started here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tidegate import cli
from tidegate.bench import DEFAULTS, Remote, run_bench
from tidegate.bench.figures import Deadline, latency_ms, percentile, rss_bytes
from tidegate.bench.publish import batches
from tidegate.bench.server import announced_port
from tidegate.bench_names import BENCH_NAMES
from tidegate.errors import UsageError
from tidegate.options import ApiKey

REMOTE = Remote("127.0.0.1:1", ApiKey("not-a-real-key"))


def test_every_contract_name_has_defaults() -> None:
    assert set(DEFAULTS) == set(BENCH_NAMES)
    assert set(BENCH_NAMES) == {
        "produce",
        "consume",
        "lite-topics",
        "fanin",
        "schedule",
        "recovery",
        "submit",
        "relay",
    }


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile(samples, 100) == 100.0
    assert percentile(list(reversed(samples)), 1) == 1.0
    assert percentile([], 99) == 0.0


def test_latency_ms_names_and_scales() -> None:
    figures = latency_ms("deliver", [0.001, 0.002, 0.010])
    assert figures == {"deliver_p50_ms": 2.0, "deliver_p99_ms": 10.0}


def test_batches_make_exactly_count_messages_over_the_lanes() -> None:
    lanes = ["p-0", "p-1", "p-2"]
    calls, request = batches("t", lanes, b"x" * 8, count=1050, batch=100)
    assert calls == 11
    # Compact batches (PublishRequest.batch), as the SDK sends them.
    assert not any(request(i).messages for i in range(calls))
    sizes = [len(request(i).batch.bodies) for i in range(calls)]
    assert sizes == [100] * 10 + [50]
    assert [list(request(i).batch.lite_topics) for i in range(4)] == [
        ["p-0"],
        ["p-1"],
        ["p-2"],
        ["p-0"],
    ]
    assert list(request(10).batch.lite_topics) == ["p-1"]  # call 10 -> lane 10 % 3
    assert request(0).batch.topic == "t"
    assert all(body == b"x" * 8 for body in request(0).batch.bodies)


def test_batches_of_fewer_messages_than_a_batch() -> None:
    calls, request = batches("t", ["a"], b"", count=3, batch=100)
    assert calls == 1
    assert len(request(0).batch.bodies) == 3


def test_announced_port_reads_the_serve_banner() -> None:
    line = "tidegate serve: listening on 127.0.0.1:40123 (data /tmp/x, fsync interval, tenants: b)"
    assert announced_port(line) == 40123
    with pytest.raises(UsageError, match="not where it listens"):
        announced_port("Traceback (most recent call last):")


def test_deadline_bounds_a_loop() -> None:
    assert not Deadline(3600.0, "a long one").expired()
    spent = Deadline(0.0, "filling the log")
    assert spent.expired()
    with pytest.raises(UsageError, match=r"filling the log did not finish within 0 s"):
        spent.check()


def test_rss_of_this_process_and_of_a_missing_one() -> None:
    assert rss_bytes() > 0
    assert rss_bytes(os.getpid()) > 0
    with pytest.raises(UsageError, match="cannot read the RSS of process 999999999"):
        rss_bytes(999_999_999)


def test_unknown_name_is_refused() -> None:
    with pytest.raises(UsageError, match="'nope' is not a benchmark"):
        run_bench("nope", {})


def test_fanin_needs_the_server() -> None:
    with pytest.raises(UsageError, match="drop --in-process"):
        run_bench("fanin", {}, in_process=True)


def test_recovery_cannot_kill_a_server_it_did_not_start() -> None:
    with pytest.raises(UsageError, match="cannot use --server"):
        run_bench("recovery", {}, server=REMOTE)


def test_schedule_runs_in_this_process_only() -> None:
    with pytest.raises(UsageError, match="drop --server"):
        run_bench("schedule", {}, server=REMOTE)


@pytest.mark.parametrize("name", ["submit", "relay"])
def test_serving_benches_start_their_own_server_and_workers(name: str) -> None:
    with pytest.raises(UsageError, match="starts its own server and workers"):
        run_bench(name, {}, server=REMOTE)
    with pytest.raises(UsageError, match="starts its own server and workers"):
        run_bench(name, {}, in_process=True)
    with pytest.raises(UsageError, match="temporary directory; drop --data-dir"):
        run_bench(name, {}, "/tmp/somewhere")


def test_own_server_settings_do_not_apply_to_a_running_one() -> None:
    with pytest.raises(UsageError, match="that server's settings hold"):
        run_bench("produce", {"fsync": "always"}, server=REMOTE)
    with pytest.raises(UsageError, match="that server's settings hold"):
        run_bench("produce", {}, "/tmp/somewhere", server=REMOTE)


def test_in_process_and_server_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", "produce", "--in-process", "--server", "127.0.0.1:7400"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--server", "no-port"], "--server 'no-port' must be HOST:PORT"),
        (["--server", "127.0.0.1:7400"], "no API key: set TIDEGATE_API_KEY"),
        (["--server-pid", "12"], "--server-pid and --api-key-file go with --server"),
        (["--server", "127.0.0.1:7400", "--api-key-file", "/no/such/key"], "cannot read it"),
    ],
)
def test_server_flags_are_checked_in_one_line(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TIDEGATE_API_KEY", raising=False)
    assert cli.main(["bench", "produce", *argv]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_unreachable_server_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = tmp_path / "key"
    key.write_text("some-key\n")
    # Port 1 on loopback: nothing listens there, so the Status check fails at once.
    code = cli.main(["bench", "produce", "--server", "127.0.0.1:1", "--api-key-file", str(key)])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err
    assert "some-key" not in err
    assert err.count("\n") == 1
