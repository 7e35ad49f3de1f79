"""The workloads against Redis Streams (redis-py with hiredis, one connection per thread)."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from benchmarks.peers.common import (
    TOPIC_BODY,
    Deadline,
    latency_figures,
    payload,
    rate_figure,
    sent_at,
)
from benchmarks.peers.pacer import Pace, Pacer
from benchmarks.peers.results import Figure, Metric, System, Tier
from benchmarks.peers.servers import PeerServer
from benchmarks.peers.workloads import Sizes

__all__ = ["consume", "fanin", "produce", "publish_one", "topics"]

_STREAM = "bench"
_GROUP = "g"


def _client(server: PeerServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=60)


def _pipelined_writers(
    server: PeerServer,
    *,
    total: int,
    batch: int,
    writers: int,
    deadline: Deadline,
    add: Any,
) -> tuple[int, float]:
    """``writers`` threads, each sending pipelines of ``batch`` commands built by ``add``.

    ``add(pipe, index)`` queues one command for message ``index``. Returns
    (messages acknowledged, seconds).
    """
    done = [0] * writers
    share = total // writers

    def run(slot: int) -> None:
        client = _client(server)
        try:
            first = slot * share
            for start in range(first, first + share, batch):
                if deadline.passed():
                    return
                pipe = client.pipeline(transaction=False)
                stop = min(first + share, start + batch)
                for index in range(start, stop):
                    add(pipe, index)
                pipe.execute()
                done[slot] += stop - start
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline.left() + 5)
    return sum(done), time.perf_counter() - started


def produce(server: PeerServer, tier: Tier, sizes: Sizes) -> Figure:
    body = payload(sizes.message_bytes)
    count, seconds = _pipelined_writers(
        server,
        total=sizes.produce_count,
        batch=sizes.batch,
        writers=sizes.producers,
        deadline=Deadline.after(sizes.step_seconds),
        add=lambda pipe, _i: pipe.xadd(_STREAM, {"b": body}),
    )
    return rate_figure(
        System.REDIS,
        Metric.PRODUCE,
        tier,
        done=count,
        planned=sizes.produce_count // sizes.producers * sizes.producers,
        seconds=seconds,
    )


def consume(server: PeerServer, tier: Tier, sizes: Sizes) -> Figure:
    """XREADGROUP ``batch`` at a time; each batch's XACK rides with the next read."""
    client = _client(server)
    try:
        stored = int(client.xlen(_STREAM))
        client.xgroup_create(_STREAM, _GROUP, id="0")
        deadline = Deadline.after(sizes.step_seconds)
        got = 0
        ids: list[bytes] = []
        started = time.perf_counter()
        while got < stored and not deadline.passed():
            pipe = client.pipeline(transaction=False)
            if ids:
                pipe.xack(_STREAM, _GROUP, *ids)
            pipe.xreadgroup(_GROUP, "c1", {_STREAM: ">"}, count=sizes.batch)
            reply = pipe.execute()[-1]
            entries = reply[0][1] if reply else []
            if not entries:
                break
            ids = [entry_id for entry_id, _fields in entries]
            got += len(ids)
        if ids:
            client.xack(_STREAM, _GROUP, *ids)
        seconds = time.perf_counter() - started
        pending = int(client.xpending(_STREAM, _GROUP)["pending"])
    finally:
        client.close()
    return rate_figure(
        System.REDIS,
        Metric.CONSUME,
        tier,
        done=got,
        planned=stored,
        seconds=seconds,
        details={"left_unacked": float(pending)},
    )


def publish_one(server: PeerServer, tier: Tier, sizes: Sizes) -> Figure:
    body = payload(sizes.message_bytes)
    client = _client(server)
    latencies: list[float] = []
    deadline = Deadline.after(sizes.publish_one_seconds)
    try:
        started = time.perf_counter()
        while len(latencies) < sizes.publish_one_count and not deadline.passed():
            t0 = time.perf_counter()
            client.xadd("one", {"b": body})
            latencies.append((time.perf_counter() - t0) * 1e3)
        seconds = time.perf_counter() - started
    finally:
        client.close()
    return rate_figure(
        System.REDIS,
        Metric.PUBLISH_ONE,
        tier,
        done=len(latencies),
        planned=len(latencies),  # bounded by time by design
        seconds=seconds,
        latencies_ms=latencies,
    )


def topics(server: PeerServer, tier: Tier, sizes: Sizes) -> list[Figure]:
    """One stream per session key, one 16-byte entry each; INFO used_memory growth."""
    client = _client(server)
    try:
        before = client.info("memory")
        rss_before = server.rss_bytes()
        count, seconds = _pipelined_writers(
            server,
            total=sizes.topics,
            batch=sizes.topic_batch,
            writers=sizes.producers,
            deadline=Deadline.after(sizes.step_seconds),
            add=lambda pipe, i: pipe.xadd(f"s-{i}", {"b": TOPIC_BODY}),
        )
        time.sleep(2.0)  # the same settle time for every system before memory is read
        after = client.info("memory")
        rss_after = server.rss_bytes()
        one_key = client.memory_usage("s-0") or 0
        keys = int(client.dbsize())
    finally:
        client.close()
    used = int(after["used_memory"]) - int(before["used_memory"])
    per_topic = used / count if count else 0.0
    planned = sizes.topics // sizes.producers * sizes.producers
    return [
        rate_figure(
            System.REDIS, Metric.TOPIC_CREATE, tier, done=count, planned=planned, seconds=seconds
        ),
        Figure(
            System.REDIS,
            Metric.TOPIC_MEMORY,
            tier,
            value=round(max(0.0, per_topic), 1),
            count=count,
            seconds=seconds,
            complete=count >= planned,
            details={
                "used_memory_delta": float(used),
                "rss_delta": float(rss_after - rss_before),
                "memory_usage_one_key": float(one_key),
                "keys": float(keys),
            },
        ),
    ]


def fanin(server: PeerServer, tier: Tier, sizes: Sizes, seed: int) -> list[Figure]:
    """XREAD BLOCK over every session key, each with the last id read from it."""
    keys = [f"f-{i}" for i in range(sizes.fanin_topics)]
    total = int(sizes.fanin_rate * sizes.fanin_seconds)
    deadline = Deadline.after(sizes.fanin_seconds + 30)
    latencies: list[float] = []
    reads = 0
    last: dict[Any, Any] = dict.fromkeys(keys, "0-0")
    pace = Pace(
        System.REDIS, server.port, "f-", sizes.fanin_topics, total, sizes.fanin_rate,
        sizes.fanin_seconds + 30, seed,
    )  # fmt: skip
    pacer = Pacer(pace).start()
    client = _client(server)
    try:
        while len(latencies) < total and not deadline.passed():
            reply: Any = client.xread(last, block=1000)
            reads += 1
            now = time.time()
            for key, entries in reply or []:
                for entry_id, fields in entries:
                    latencies.append(max(0.0, (now - sent_at(fields[b"b"])) * 1e3))
                    last[key.decode()] = entry_id
    finally:
        client.close()
        sent, seconds = pacer.finish()
    return latency_figures(
        System.REDIS,
        tier,
        latencies,
        planned=total,
        seconds=seconds,
        details={"xread_calls": float(reads), "sent_per_s": round(sent / seconds, 1)},
    )
