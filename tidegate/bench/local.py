"""The in-process workloads: the broker core with no server and no wire (``--in-process``).

They run against a real store (real files, real RocksDB) in the data
directory they are given, so the figures are the ceiling the server's own
can approach; issue 2's targets for lite-topics, produce and recovery are
stated for these. ``schedule`` lives here too: it times the scheduler's
dispatch decision, which involves no server at all.

Latency percentiles are over per-call samples (one ``publish_batch`` or one
``lease`` call).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from broker import Broker, BrokerSettings, FsyncPolicy, PublishRequest, QueueName
from scheduler.bench import run_schedule_bench
from tidegate.bench.figures import Figures, latency_ms, rss_bytes
from tidegate.errors import UsageError

__all__ = ["consume", "fill_and_die", "lite_topics", "produce", "recovery", "schedule"]


def _settings(fsync: str) -> BrokerSettings:
    return BrokerSettings(fsync=FsyncPolicy(fsync))


def _run_figures(count: int, size: int, batch: int, elapsed: float) -> Figures:
    """The shape and rate of one timed run, as produce and consume both report them."""
    return {
        "count": count,
        "size": size,
        "batch": batch,
        "elapsed_s": round(elapsed, 4),
        "msgs_per_s": round(count / elapsed, 1),
    }


# ------------------------------------------------------------------ produce


def produce(
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
        **_run_figures(count, size, batch, elapsed),
        "mb_per_s": round(count * size / elapsed / 1e6, 2),
        **latency_ms("publish", latencies),
    }


# ------------------------------------------------------------------ consume


def consume(
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
    return {**_run_figures(count, size, batch, elapsed), **latency_ms("deliver", latencies)}


# ------------------------------------------------------------------ lite-topics


def lite_topics(data_dir: Path, *, count: int, fsync: str = "interval") -> Figures:
    """Create ``count`` lite-topics ``chatbot/s-N``, one 16-byte message each.

    ``rss_bytes`` is the growth of this process's resident memory over the
    run (RocksDB memtables and caches included), ``bytes_per_topic`` that
    growth divided by the count.
    """
    batch = 1000
    body = b"0123456789abcdef"
    broker = Broker.open(data_dir, _settings(fsync))
    try:
        rss_before = rss_bytes()
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
        rss_growth = max(0, rss_bytes() - rss_before)
        queues = broker.stats().queues
    finally:
        broker.close()
    return {
        "count": count,
        "queues": queues,
        "elapsed_s": round(elapsed, 3),
        "create_per_s": round(count / elapsed, 1),
        "rss_bytes": rss_growth,
        "bytes_per_topic": round(rss_growth / count, 1),
    }


# ------------------------------------------------------------------ recovery


def fill_and_die(data_dir: str, log_bytes: int, fsync: str = "interval") -> None:
    """Child side of ``recovery``: write ``log_bytes`` of 1 KiB messages, then SIGKILL itself."""
    broker = Broker.open(Path(data_dir), _settings(fsync))
    body = os.urandom(1024)
    requests = [
        PublishRequest(topic="recovery", body=body, lite_topics=(f"s-{i}",)) for i in range(100)
    ]
    while broker.stats().log_end < log_bytes:
        broker.publish_batch(requests)
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def recovery(data_dir: Path, *, log_bytes: int, fsync: str = "interval") -> Figures:
    """Crash a writer (SIGKILL) after ``log_bytes`` of log, then time the reopen."""
    code = (
        "from tidegate.bench.local import fill_and_die; "
        f"fill_and_die({str(data_dir)!r}, {log_bytes}, {fsync!r})"
    )
    limit_s = max(120.0, log_bytes / 5e6)  # a writer slower than 5 MB/s is stuck
    try:
        proc = subprocess.run(  # noqa: S603 - our own interpreter running our own code
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=False,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired:
        raise UsageError(
            f"recovery: the writer did not reach {log_bytes} bytes within {limit_s:g} s"
        ) from None
    if proc.returncode != -signal.SIGKILL:
        raise UsageError(
            f"recovery: the writer did not reach {log_bytes} bytes "
            f"(exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        )
    started = time.perf_counter()
    broker = Broker.open(data_dir, _settings(fsync))
    recover_s = time.perf_counter() - started
    try:
        stats = broker.stats()
    finally:
        broker.close()
    return {
        "log_bytes": stats.log_end - stats.log_start,
        "queues": stats.queues,
        "recover_s": round(recover_s, 3),
    }


# ------------------------------------------------------------------ schedule


def schedule(*, queued: int, tenants: int) -> Figures:
    figures: Figures = dict(run_schedule_bench(queued=queued, tenants=tenants, seed=1))
    figures.update(queued=queued, tenants=tenants)
    return figures
