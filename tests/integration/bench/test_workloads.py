"""Every `tidegate bench` workload end to end with tiny sizes: against a server it
starts, against a running one (``--server``) and in process.

Benchmarks report figures; these tests check the figures are there, are sane
(positive, counts as asked) and that the run cleaned up after itself. They
never assert a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidegate.bench import Remote, run_bench
from tidegate.bench.server import BenchServer
from tidegate.errors import UsageError
from tidegate.options import ApiKey

pytestmark = pytest.mark.integration

CONTRACT_KEYS = {
    "produce": ("msgs_per_s", "mb_per_s", "publish_p99_ms"),
    "consume": ("msgs_per_s", "deliver_p99_ms"),
    "lite-topics": ("count", "create_per_s", "rss_bytes", "bytes_per_topic"),
    "fanin": ("subscriptions", "deliver_p50_ms", "deliver_p99_ms"),
    "schedule": ("dispatch_us_p50", "dispatch_us_p99"),
    "recovery": ("log_bytes", "recover_s"),
    "submit": ("achieved_per_s", "p50_ms", "p99_ms"),
    "relay": ("chunks_per_s", "p50_ms", "p99_ms"),
}
MAY_BE_ZERO = {"rss_bytes", "bytes_per_topic"}  # RSS can shrink over a tiny run

TINY: dict[str, dict[str, Any]] = {
    "produce": {"count": 600, "size": 256, "batch": 50, "clients": 2},
    "consume": {"count": 600, "size": 256, "batch": 50, "clients": 2},
    "lite-topics": {"count": 1500, "clients": 2},
    "fanin": {"subscriptions": 300, "rate": 200, "seconds": 0.5},
    "schedule": {"queued": 500, "tenants": 5},
    "recovery": {"log_bytes": 2_000_000, "clients": 2},
    "submit": {"rate": 50, "seconds": 1.0},
    "relay": {"streams": 20, "rate": 20, "seconds": 3.0, "workers": 2, "warmup_s": 1.0},
}


def _children() -> list[int]:
    """Live (not zombie) child processes of this test process."""
    mine = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == mine and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def clean_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Temporary files of the run go here; afterwards none may be left, nor a server."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    before = set(_children())
    yield scratch
    assert list(scratch.iterdir()) == []
    assert set(_children()) - before == set()


def check_figures(name: str, figures: dict[str, Any], mode: str) -> None:
    assert figures["workload"] == name
    assert figures["mode"] == mode
    json.loads(json.dumps(figures))  # one JSON object, nothing exotic in it
    for key in CONTRACT_KEYS[name]:
        value = figures[key]
        assert isinstance(value, int | float), (key, value)
        if key in MAY_BE_ZERO:
            assert value >= 0, (key, value)
        else:
            assert value > 0, (key, value)


def check_counts(name: str, figures: dict[str, Any], options: dict[str, Any]) -> None:
    if name in ("produce", "consume", "lite-topics"):
        assert figures["count"] == options["count"]
    if name == "consume" and figures["mode"] != "in-process":
        assert figures["live_msgs"] > 0
    if name == "fanin":
        assert figures["subscriptions"] == options["subscriptions"]
        assert figures["received"] == figures["sent"] > 0
    if name == "recovery":
        assert figures["log_bytes"] >= options["log_bytes"]
    if name == "submit":
        assert figures["requests"] == figures["started"] == options["rate"] * options["seconds"]
    if name == "relay":
        assert figures["streams"] == options["streams"]
        # The steady window is a part of the run: fewer chunks, none slower
        # than the whole run's slowest.
        whole = figures["whole_run"]
        assert 0 < figures["chunks"] < whole["chunks"]
        assert figures["max_ms"] <= whole["max_ms"]
        assert figures["steady_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["produce", "consume", "lite-topics", "fanin", "recovery", "submit", "relay"]
)
def test_against_a_server_it_starts(name: str, clean_tmp: Path) -> None:
    figures = run_bench(name, TINY[name])
    check_figures(name, figures, "server")
    check_counts(name, figures, TINY[name])
    assert figures["fsync"] == "interval"
    if name == "recovery":
        assert figures["open_s"] > 0
        assert figures["empty_start_s"] > 0
        assert figures["queues"] >= 100  # the 100 lite-topics it filled


@pytest.mark.parametrize("name", ["produce", "consume", "lite-topics", "recovery", "schedule"])
def test_in_process(name: str, clean_tmp: Path) -> None:
    figures = run_bench(name, TINY[name], in_process=True)
    check_figures(name, figures, "in-process")
    check_counts(name, figures, TINY[name])


@pytest.mark.slow
def test_against_a_running_server(tmp_path: Path) -> None:
    server = BenchServer(tmp_path, tmp_path / "data", "always")
    server.start()
    try:
        remote = Remote(server.address, server.key, pid=server.pid)
        for name in ("produce", "consume", "lite-topics", "fanin"):
            figures = run_bench(name, TINY[name], server=remote)
            check_figures(name, figures, "remote")
            check_counts(name, figures, TINY[name])
            assert figures["server"] == server.address
            assert figures["fsync"] == "always"  # the server's setting, as it reports it
        # Without its pid the server's RSS cannot be read: said, not made up.
        unknown = run_bench(
            "lite-topics", TINY["lite-topics"], server=Remote(remote.address, remote.api_key)
        )
        assert unknown["rss_bytes"] is None
        assert unknown["create_per_s"] > 0
        with pytest.raises(UsageError, match="UNAUTHENTICATED"):
            run_bench("produce", TINY["produce"], server=Remote(remote.address, ApiKey("wrong")))
    finally:
        server.stop()
    assert not server.running


@pytest.mark.slow
def test_data_dir_is_kept(tmp_path: Path, clean_tmp: Path) -> None:
    keep = tmp_path / "keep"
    figures = run_bench("produce", TINY["produce"], str(keep))
    check_figures("produce", figures, "server")
    assert any((keep / "log").iterdir())


@pytest.mark.slow
def test_the_command_prints_one_json_object(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "tidegate", "bench", "produce", "--count", "300", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    check_figures("produce", json.loads(lines[0]), "server")
    assert list(tmp_path.iterdir()) == []
