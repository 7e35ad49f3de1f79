"""Measure the broker core in process (no server): lite-topic creation and produce.

    python benchmarks/broker_core.py lite-topics [--count 1000000] [--json]
    python benchmarks/broker_core.py produce [--count 500000] [--size 1024] [--batch 100]
                                             [--lites 4] [--json]

``lite-topics`` creates ``count`` lite-topics through ``publish_batch`` (one
16-byte message each, batches of 1000, fsync at intervals) and reports the
creation rate and the RSS growth per topic (RocksDB memtables and caches
included: it is the process's RSS). ``produce`` publishes ``count`` messages
of ``size`` bytes in batches of ``batch`` into a few lite-topics under
``fsync=interval``. Keys follow CONTRACTS.md section 4. A measurement, not a
test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from broker import Broker, BrokerSettings, FsyncPolicy, PublishRequest


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def lite_topics(directory: Path, count: int) -> dict[str, Any]:
    broker = Broker.open(directory, BrokerSettings(fsync=FsyncPolicy.INTERVAL))
    body = b"0123456789abcdef"
    try:
        gc.collect()
        before = rss_bytes()
        cpu = time.process_time()
        thread_cpu = time.thread_time()
        start = time.perf_counter()
        for first in range(0, count, 1000):
            broker.publish_batch(
                [
                    PublishRequest("chatbot", body, (f"s-{i}",))
                    for i in range(first, min(first + 1000, count))
                ]
            )
        elapsed = time.perf_counter() - start
        thread_cpu = time.thread_time() - thread_cpu
        cpu = time.process_time() - cpu
        after = rss_bytes()
        stats = broker.stats()
    finally:
        broker.close()
    return {
        "count": count,
        "create_per_s": round(count / elapsed),
        "elapsed_s": round(elapsed, 2),
        "cpu_s": round(cpu, 2),  # all threads: RocksDB flushes and compactions too
        "publisher_cpu_us_per_topic": round(thread_cpu / count * 1e6, 2),
        "rss_bytes": after,
        "rss_growth_bytes": after - before,
        "bytes_per_topic": round((after - before) / count, 1),
        "queues": stats.queues,
        "index_memory_bytes": stats.index_memory_bytes,
    }


def produce(directory: Path, count: int, size: int, batch: int, lites: int) -> dict[str, Any]:
    broker = Broker.open(directory, BrokerSettings(fsync=FsyncPolicy.INTERVAL))
    body = os.urandom(size)
    names = [(f"s-{i}",) for i in range(lites)]
    requests = [PublishRequest("chatbot", body, names[i % lites]) for i in range(batch)]
    latencies: list[float] = []
    try:
        cpu = time.process_time()
        thread_cpu = time.thread_time()
        start = time.perf_counter()
        for _ in range(count // batch):
            began = time.perf_counter()
            broker.publish_batch(requests)
            latencies.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - start
        thread_cpu = time.thread_time() - thread_cpu
        cpu = time.process_time() - cpu
    finally:
        broker.close()
    sent = len(latencies) * batch
    return {
        "count": sent,
        "size": size,
        "batch": batch,
        "msgs_per_s": round(sent / elapsed),
        "mb_per_s": round(sent * size / elapsed / 1e6, 1),
        "publish_p50_ms": round(percentile(latencies, 50) * 1e3, 3),
        "publish_p99_ms": round(percentile(latencies, 99) * 1e3, 3),
        "elapsed_s": round(elapsed, 2),
        "cpu_s": round(cpu, 2),  # all threads: RocksDB flushes and the log's fsyncs too
        "publisher_cpu_us_per_msg": round(thread_cpu / sent * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    sub = parser.add_subparsers(dest="workload", required=True)
    lite = sub.add_parser("lite-topics", parents=[common])
    lite.add_argument("--count", type=int, default=1_000_000)
    prod = sub.add_parser("produce", parents=[common])
    prod.add_argument("--count", type=int, default=500_000)
    prod.add_argument("--size", type=int, default=1024)
    prod.add_argument("--batch", type=int, default=100)
    prod.add_argument("--lites", type=int, default=4)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tidegate-bench-"))
    try:
        if args.workload == "lite-topics":
            result = lite_topics(directory / "store", args.count)
        else:
            result = produce(directory / "store", args.count, args.size, args.batch, args.lites)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
