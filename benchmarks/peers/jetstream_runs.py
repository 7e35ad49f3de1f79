"""The workloads against NatsClient JetStream (nats-py on asyncio, one connection)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

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

T = TypeVar("T")


def _run(
    server: PeerServer,
    body: Callable[[NatsClient, JetStreamContext], Awaitable[T]],
    limit: float,
) -> T:
    """Run ``body`` on a fresh event loop with a fresh connection, within ``limit`` seconds."""

    async def main() -> T:
        nc = await nats.connect(f"nats://127.0.0.1:{server.port}", max_reconnect_attempts=0)
        try:
            return await asyncio.wait_for(body(nc, nc.jetstream(timeout=30)), timeout=limit)
        finally:
            await nc.close()

    return asyncio.run(main())


async def _async_publish(
    js: JetStreamContext,
    *,
    subject_of: Callable[[int], str],
    body: bytes,
    count: int,
    deadline: Deadline,
) -> tuple[int, float]:
    """Publish ``count`` messages, acks pending up to the context's window; (acked, seconds).

    nats-py's own semaphore (``publish_async_max_pending``) holds the window,
    so each message costs O(1) here; the acks are counted as they land.
    """
    acked = 0

    def landed(future: asyncio.Future[Any]) -> None:
        nonlocal acked
        if not future.cancelled() and future.exception() is None:
            acked += 1

    started = time.perf_counter()
    for i in range(count):
        if deadline.passed():
            break
        # No wait_stall: with one, nats-py wraps every semaphore wait in a timed
        # task, which tripled the client's and the server's CPU per message.
        # A stalled server is bounded by _run's limit instead.
        future = await js.publish_async(subject_of(i), body)
        future.add_done_callback(landed)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(js.publish_async_completed(), timeout=max(0.1, deadline.left()))
    return acked, time.perf_counter() - started


def produce(server: PeerServer, tier: Tier, sizes: Sizes) -> Figure:
    body = payload(sizes.message_bytes)

    async def work(_nc: NatsClient, js: JetStreamContext) -> tuple[int, float]:
        await js.add_stream(name="BENCH", subjects=["bench"], storage=api.StorageType.FILE)
        window = sizes.producers * sizes.batch
        js_window = _nc.jetstream(timeout=30, publish_async_max_pending=window)
        return await _async_publish(
            js_window,
            subject_of=lambda _i: "bench",
            body=body,
            count=sizes.produce_count,
            deadline=Deadline.after(sizes.step_seconds),
        )

    count, seconds = _run(server, work, sizes.step_seconds + 60)
    return rate_figure(
        System.JETSTREAM,
        Metric.PRODUCE,
        tier,
        done=count,
        planned=sizes.produce_count,
        seconds=seconds,
    )


def consume(server: PeerServer, tier: Tier, sizes: Sizes) -> Figure:
    """A durable pull consumer: fetch ``batch``, ack each (AckExplicit, the default)."""

    async def work(_nc: NatsClient, js: JetStreamContext) -> tuple[int, int, float]:
        stored = (await js.stream_info("BENCH")).state.messages
        sub = await js.pull_subscribe(
            "bench",
            durable="g",
            stream="BENCH",
            config=api.ConsumerConfig(max_ack_pending=sizes.batch * 10),
        )
        deadline = Deadline.after(sizes.step_seconds)
        got = 0
        started = time.perf_counter()
        while got < stored and not deadline.passed():
            try:
                msgs = await sub.fetch(sizes.batch, timeout=min(5.0, max(0.1, deadline.left())))
            except nats.errors.TimeoutError:
                break
            for msg in msgs:
                await msg.ack()
            got += len(msgs)
        await _nc.flush()
        return stored, got, time.perf_counter() - started

    stored, got, seconds = _run(server, work, sizes.step_seconds + 60)
    return rate_figure(
        System.JETSTREAM, Metric.CONSUME, tier, done=got, planned=stored, seconds=seconds
    )


def publish_one(server: PeerServer, tier: Tier, sizes: Sizes) -> Figure:
    body = payload(sizes.message_bytes)

    async def work(_nc: NatsClient, js: JetStreamContext) -> tuple[list[float], float]:
        await js.add_stream(name="ONE", subjects=["one"], storage=api.StorageType.FILE)
        latencies: list[float] = []
        deadline = Deadline.after(sizes.publish_one_seconds)
        started = time.perf_counter()
        while len(latencies) < sizes.publish_one_count and not deadline.passed():
            t0 = time.perf_counter()
            await js.publish("one", body)
            latencies.append((time.perf_counter() - t0) * 1e3)
        return latencies, time.perf_counter() - started

    latencies, seconds = _run(server, work, sizes.step_seconds + 60)
    return rate_figure(
        System.JETSTREAM,
        Metric.PUBLISH_ONE,
        tier,
        done=len(latencies),
        planned=len(latencies),  # bounded by time by design
        seconds=seconds,
        latencies_ms=latencies,
    )


def topics(server: PeerServer, tier: Tier, sizes: Sizes) -> list[Figure]:
    """One subject per session (``sess.s-N``) on one stream; nats-server RSS growth."""

    async def work(nc: NatsClient, js: JetStreamContext) -> tuple[int, float, int, int]:
        await js.add_stream(name="SESS", subjects=["sess.>"], storage=api.StorageType.FILE)
        window = sizes.producers * sizes.topic_batch
        js_window = nc.jetstream(timeout=30, publish_async_max_pending=window)
        before = server.rss_bytes()
        count, seconds = await _async_publish(
            js_window,
            subject_of=lambda i: f"sess.s-{i}",
            body=TOPIC_BODY,
            count=sizes.topics,
            deadline=Deadline.after(sizes.step_seconds),
        )
        await asyncio.sleep(2.0)  # the same settle time for every system
        stored = (await js.stream_info("SESS")).state.messages
        return count, seconds, server.rss_bytes() - before, stored

    count, seconds, grown, stored = _run(server, work, sizes.step_seconds + 60)
    return [
        rate_figure(
            System.JETSTREAM,
            Metric.TOPIC_CREATE,
            tier,
            done=count,
            planned=sizes.topics,
            seconds=seconds,
        ),
        Figure(
            System.JETSTREAM,
            Metric.TOPIC_MEMORY,
            tier,
            value=round(max(0.0, grown / count), 1) if count else 0.0,
            count=count,
            seconds=seconds,
            complete=count >= sizes.topics,
            details={"rss_delta": float(grown), "stream_messages": float(stored)},
        ),
    ]


def fanin(server: PeerServer, tier: Tier, sizes: Sizes, seed: int) -> list[Figure]:
    """An ordered push consumer on the wildcard ``fan.>``; the pacer publishes."""
    total = int(sizes.fanin_rate * sizes.fanin_seconds)

    async def work(_nc: NatsClient, js: JetStreamContext) -> tuple[list[float], int, float]:
        await js.add_stream(name="FAN", subjects=["fan.>"], storage=api.StorageType.FILE)
        latencies: list[float] = []
        enough = asyncio.Event()

        async def on_message(msg: Msg) -> None:
            latencies.append(max(0.0, (time.time() - sent_at(msg.data)) * 1e3))
            if len(latencies) >= total:
                enough.set()

        sub = await js.subscribe(
            "fan.>", cb=on_message, ordered_consumer=True, deliver_policy=api.DeliverPolicy.NEW
        )
        pace = Pace(
            System.JETSTREAM, server.port, "fan.s-", sizes.fanin_topics, total,
            sizes.fanin_rate, sizes.fanin_seconds + 30, seed,
        )  # fmt: skip
        pacer = Pacer(pace).start()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), timeout=sizes.fanin_seconds + 30)
        finally:
            sent, seconds = await asyncio.to_thread(pacer.finish)
        await sub.unsubscribe()
        return list(latencies), sent, seconds

    latencies, sent, seconds = _run(server, work, sizes.step_seconds + 60)
    return latency_figures(
        System.JETSTREAM,
        tier,
        latencies,
        planned=total,
        seconds=seconds,
        details={"sent_per_s": round(sent / seconds, 1)},
    )
