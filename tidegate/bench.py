"""The ``tidegate bench`` workloads (CONTRACTS.md section 4).

Each workload returns a flat dict of figures whose contract keys are named in
CONTRACTS.md; more keys are welcome. Benchmarks measure and report; they never
assert a time. Until the gRPC server exists the broker workloads run
in-process against a real store (real files, real RocksDB) in a temporary
directory, so the figures are an upper bound for what the server will show.

Latency percentiles are over per-call samples (one ``publish_batch`` or one
``lease`` call), in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from broker import Broker, BrokerSettings, PublishRequest, QueueName
from broker.log.commitlog import FsyncPolicy
from scheduler.bench import run_schedule_bench
from tidegate.errors import UsageError

__all__ = ["Figures", "percentile", "run_bench", "run_cli"]

Figures = dict[str, Any]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


@contextmanager
def _data_dir(requested: str | None) -> Iterator[Path]:
    if requested is not None:
        path = Path(requested)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"--data-dir {requested!r}: cannot create it ({reason})") from None
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-") as tmp:
        yield Path(tmp)


def _settings(fsync: str) -> BrokerSettings:
    return BrokerSettings(fsync=FsyncPolicy(fsync))


# ------------------------------------------------------------------ produce


def bench_produce(
    data_dir: Path, *, count: int, size: int, batch: int, fsync: str = "interval"
) -> Figures:
    """Batched publish of ``count`` messages of ``size`` bytes into one topic."""
    body = os.urandom(size)
    latencies: list[float] = []
    broker = Broker.open(data_dir, _settings(fsync))
    try:
        requests = [PublishRequest(topic="bench", body=body)] * batch
        sent = 0
        started = time.perf_counter()
        while sent < count:
            n = min(batch, count - sent)
            t0 = time.perf_counter()
            broker.publish_batch(requests[:n])
            latencies.append(time.perf_counter() - t0)
            sent += n
        elapsed = time.perf_counter() - started
    finally:
        broker.close()
    return {
        "workload": "produce",
        "fsync": fsync,
        "count": count,
        "size": size,
        "batch": batch,
        "elapsed_s": round(elapsed, 4),
        "msgs_per_s": round(count / elapsed, 1),
        "mb_per_s": round(count * size / elapsed / 1e6, 2),
        "publish_p50_ms": round(percentile(latencies, 50) * 1e3, 3),
        "publish_p99_ms": round(percentile(latencies, 99) * 1e3, 3),
    }


# ------------------------------------------------------------------ consume


def bench_consume(
    data_dir: Path, *, count: int, size: int, batch: int, fsync: str = "interval"
) -> Figures:
    """Lease + ack ``count`` messages back from one queue, ``batch`` at a time.

    The backlog is produced first and not timed; ``deliver_*`` is the time of
    one lease call (the in-process stand-in for one delivery).
    """
    body = os.urandom(size)
    queue = QueueName(namespace="", topic="bench")
    broker = Broker.open(data_dir, _settings(fsync))
    latencies: list[float] = []
    try:
        chunk = [PublishRequest(topic="bench", body=body)] * 1000
        for start in range(0, count, 1000):
            broker.publish_batch(chunk[: min(1000, count - start)])
        received = 0
        started = time.perf_counter()
        while received < count:
            t0 = time.perf_counter()
            lease = broker.lease("bench", queue, batch, 30.0)
            latencies.append(time.perf_counter() - t0)
            if not lease.messages:
                raise RuntimeError(f"consume stalled after {received} of {count} messages")
            broker.ack("bench", queue, [m.offset for m in lease.messages])
            received += len(lease.messages)
        elapsed = time.perf_counter() - started
    finally:
        broker.close()
    return {
        "workload": "consume",
        "fsync": fsync,
        "count": count,
        "size": size,
        "batch": batch,
        "elapsed_s": round(elapsed, 4),
        "msgs_per_s": round(count / elapsed, 1),
        "deliver_p50_ms": round(percentile(latencies, 50) * 1e3, 3),
        "deliver_p99_ms": round(percentile(latencies, 99) * 1e3, 3),
    }


# ------------------------------------------------------------------ lite-topics


def bench_lite_topics(data_dir: Path, *, count: int, fsync: str = "interval") -> Figures:
    """Create ``count`` lite-topics ``chatbot/s-N``, one 16-byte message each.

    ``rss_bytes`` is the growth of this process's resident memory over the
    run (RocksDB memtables and caches included), ``bytes_per_topic`` that
    growth divided by the count.
    """
    batch = 1000
    body = b"0123456789abcdef"
    broker = Broker.open(data_dir, _settings(fsync))
    try:
        rss_before = _rss_bytes()
        started = time.perf_counter()
        for start in range(0, count, batch):
            end = min(count, start + batch)
            broker.publish_batch(
                [
                    PublishRequest(topic="chatbot", body=body, lite_topics=(f"s-{i}",))
                    for i in range(start, end)
                ]
            )
        elapsed = time.perf_counter() - started
        rss_growth = max(0, _rss_bytes() - rss_before)
        queues = broker.stats().queues
    finally:
        broker.close()
    return {
        "workload": "lite-topics",
        "fsync": fsync,
        "count": count,
        "queues": queues,
        "elapsed_s": round(elapsed, 3),
        "create_per_s": round(count / elapsed, 1),
        "rss_bytes": rss_growth,
        "bytes_per_topic": round(rss_growth / count, 1),
    }


# ------------------------------------------------------------------ recovery


def _fill_and_die(data_dir: str, log_bytes: int) -> None:
    """Child side of ``recovery``: write ``log_bytes`` of 1 KiB messages, then SIGKILL itself."""
    broker = Broker.open(Path(data_dir), _settings("interval"))
    body = os.urandom(1024)
    requests = [
        PublishRequest(topic="recovery", body=body, lite_topics=(f"s-{i}",)) for i in range(100)
    ]
    while broker.stats().log_end < log_bytes:
        broker.publish_batch(requests)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def bench_recovery(data_dir: Path, *, log_bytes: int) -> Figures:
    """Crash a writer (SIGKILL) after ``log_bytes`` of log, then time the reopen."""
    code = (
        "from tidegate.bench import _fill_and_die; "
        f"_fill_and_die({str(data_dir)!r}, {log_bytes})"
    )
    proc = subprocess.run(  # noqa: S603 - our own interpreter running our own code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    if proc.returncode != -signal.SIGKILL:
        raise UsageError(
            f"recovery: the writer did not reach {log_bytes} bytes "
            f"(exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        )
    started = time.perf_counter()
    broker = Broker.open(data_dir, _settings("interval"))
    recover_s = time.perf_counter() - started
    try:
        stats = broker.stats()
    finally:
        broker.close()
    return {
        "workload": "recovery",
        "log_bytes": stats.log_end - stats.log_start,
        "queues": stats.queues,
        "recover_s": round(recover_s, 3),
    }


# ------------------------------------------------------------------ schedule


def bench_schedule(*, queued: int, tenants: int) -> Figures:
    figures: Figures = {"workload": "schedule", "queued": queued, "tenants": tenants}
    figures.update(run_schedule_bench(queued=queued, tenants=tenants, seed=1))
    return figures


# ------------------------------------------------------------------ entry points

_DEFAULTS: dict[str, dict[str, int]] = {
    "produce": {"count": 200_000, "size": 1024, "batch": 100},
    "consume": {"count": 200_000, "size": 1024, "batch": 100},
    "lite-topics": {"count": 100_000},
    "recovery": {"log_bytes": 256 * 1024 * 1024},
    "schedule": {"queued": 100_000, "tenants": 1_000},
}


def run_bench(name: str, options: dict[str, Any], data_dir: str | None = None) -> Figures:
    """Run one workload by name with ``options`` (missing ones take the defaults)."""
    if name not in _DEFAULTS:
        known = ", ".join(sorted(_DEFAULTS))
        raise UsageError(f"bench {name!r} is not available in this build (available: {known})")
    opts: dict[str, Any] = {**_DEFAULTS[name], **{k: v for k, v in options.items() if v}}
    if name == "schedule":
        return bench_schedule(queued=opts["queued"], tenants=opts["tenants"])
    fsync = opts.get("fsync") or "interval"
    runners: dict[str, Callable[[Path], Figures]] = {
        "produce": lambda d: bench_produce(
            d, count=opts["count"], size=opts["size"], batch=opts["batch"], fsync=fsync
        ),
        "consume": lambda d: bench_consume(
            d, count=opts["count"], size=opts["size"], batch=opts["batch"], fsync=fsync
        ),
        "lite-topics": lambda d: bench_lite_topics(d, count=opts["count"], fsync=fsync),
        "recovery": lambda d: bench_recovery(d, log_bytes=opts["log_bytes"]),
    }
    with _data_dir(data_dir) as directory:
        return runners[name](directory)


def run_cli(args: argparse.Namespace) -> int:
    options = {
        key: getattr(args, key, None)
        for key in ("count", "size", "batch", "log_bytes", "queued", "tenants", "fsync")
    }
    figures = run_bench(args.name, options, args.data_dir)
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        _print_table(figures)
    return 0


def _print_table(figures: Figures) -> None:
    table = Table(title=f"tidegate bench {figures.get('workload', '')}", show_header=False)
    for key, value in figures.items():
        if key != "workload":
            table.add_row(key, f"{value:,}" if isinstance(value, int | float) else str(value))
    Console().print(table)
