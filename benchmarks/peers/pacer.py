"""The fan-in publisher: a child process that publishes at a fixed rate to random sessions.

It runs in its own interpreter so the consumer's Python work (an XREAD over
100,000 keys, a gRPC stream's frames) cannot starve it through the GIL: the
rate is the same for every system. Each message carries its send time; each
publish is acknowledged (tidegate's and JetStream's with up to ``IN_FLIGHT``
acknowledgements pending, so the rate holds when one round trip is slower
than the gap between two messages; Redis's XADD is answered well within it).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from benchmarks.peers.common import Deadline, due, stamped
from benchmarks.peers.results import System

__all__ = ["IN_FLIGHT", "Pace", "Pacer"]

IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class Pace:
    """What the child publishes: ``total`` messages at ``rate``/s to ``prefix``N, N < topics."""

    system: System
    port: int
    prefix: str
    topics: int
    total: int
    rate: float
    seconds: float  # the bound on the whole publishing run
    seed: int
    api_key: str = ""


def _sleep_until(started: float, index: int, rate: float) -> None:
    pause = due(started, index, rate) - time.perf_counter()
    if pause > 0:
        time.sleep(pause)


def _redis(pace: Pace, deadline: Deadline, rng: random.Random) -> int:
    import redis

    client = redis.Redis(host="127.0.0.1", port=pace.port, socket_timeout=30)
    sent = 0
    try:
        started = time.perf_counter()
        while sent < pace.total and not deadline.passed():
            _sleep_until(started, sent, pace.rate)
            key = f"{pace.prefix}{rng.randrange(pace.topics)}"
            client.xadd(key, {"b": stamped(time.time())})
            sent += 1
    finally:
        client.close()
    return sent


def _tidegate(pace: Pace, deadline: Deadline, rng: random.Random) -> int:
    import grpc

    from broker.proto import broker_pb2 as pb
    from broker.proto import broker_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{pace.port}")
    stub = pb_grpc.BrokerStub(channel)
    metadata = (("x-api-key", pace.api_key),)
    topic, _, lite = pace.prefix.partition("/")
    pending: deque[Any] = deque()
    sent = 0
    try:
        started = time.perf_counter()
        while sent < pace.total and not deadline.passed():
            _sleep_until(started, sent, pace.rate)
            while len(pending) >= IN_FLIGHT:
                pending.popleft().result(timeout=max(1.0, deadline.left()))
            message = pb.OutboundMessage(
                topic=topic,
                lite_topics=[f"{lite}{rng.randrange(pace.topics)}"],
                body=stamped(time.time()),
            )
            request = pb.PublishRequest(messages=[message])
            pending.append(stub.Publish.future(request, metadata=metadata, timeout=30))
            sent += 1
        while pending:
            pending.popleft().result(timeout=max(1.0, deadline.left()))
    finally:
        channel.close()
    return sent


def _jetstream(pace: Pace, deadline: Deadline, rng: random.Random) -> int:
    import nats

    async def main() -> int:
        nc = await nats.connect(f"nats://127.0.0.1:{pace.port}", max_reconnect_attempts=0)
        js = nc.jetstream(timeout=30, publish_async_max_pending=IN_FLIGHT)
        sent = 0
        try:
            started = time.perf_counter()
            while sent < pace.total and not deadline.passed():
                pause = due(started, sent, pace.rate) - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                subject = f"{pace.prefix}{rng.randrange(pace.topics)}"
                await js.publish_async(subject, stamped(time.time()))
                sent += 1
            await asyncio.wait_for(js.publish_async_completed(), max(1.0, deadline.left()))
        finally:
            await nc.close()
        return sent

    return asyncio.run(main())


_SENDERS: dict[System, Callable[[Pace, Deadline, random.Random], int]] = {
    System.REDIS: _redis,
    System.TIDEGATE: _tidegate,
    System.JETSTREAM: _jetstream,
}


def _child(pace: Pace, results: multiprocessing.Queue[tuple[int, float] | str]) -> None:
    """The child's entry: publish, then report (sent, seconds) or the error."""
    started = time.perf_counter()
    try:
        sent = _SENDERS[pace.system](pace, Deadline.after(pace.seconds), random.Random(pace.seed))
    except Exception as exc:  # the parent reports it; the child only ends
        results.put(f"{type(exc).__name__}: {exc}")
        return
    results.put((sent, time.perf_counter() - started))


class Pacer:
    """The child process: ``start()``, then ``finish()`` for (messages sent, seconds)."""

    def __init__(self, pace: Pace) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a gRPC process
        self._pace = pace
        self._results: multiprocessing.Queue[tuple[int, float] | str] = context.Queue()
        self._proc: BaseProcess = context.Process(
            target=_child, args=(pace, self._results), daemon=True
        )

    def start(self) -> Pacer:
        self._proc.start()
        return self

    def finish(self) -> tuple[int, float]:
        """Wait (bounded) for the child's report; kill it by pid if it overstays."""
        try:
            result = self._results.get(timeout=self._pace.seconds + 60)
        except queue.Empty:
            result = "the publisher did not report in time"
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(10)
        self._results.close()
        if isinstance(result, tuple):
            return result
        raise RuntimeError(f"fan-in publisher failed: {result}")
