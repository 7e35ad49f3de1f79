"""The workloads against a real ``tidegate serve``, over gRPC with the generated stubs.

Synchronous stubs, one channel per thread, the tenant's key in every call's
metadata. The SDK (``tidegate.Client``) would add its own bookkeeping on top;
the stubs measure the server and the wire, as the other two clients do.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

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
from benchmarks.peers.servers import TidegateServer
from benchmarks.peers.workloads import Sizes
from broker.proto import broker_pb2 as pb
from broker.proto import broker_pb2_grpc as pb_grpc

__all__ = ["consume", "fanin", "produce", "publish_one", "topics"]

_TOPIC = "bench"
_LITE = "p"
_GROUP = "g"
_SUBSCRIBE_CHUNK = 5000  # subscriptions added per request in fan-in setup
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class _Conn:
    """One channel and stub with the tenant's key."""

    def __init__(self, server: TidegateServer) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=_OPTIONS)
        self.stub = pb_grpc.BrokerStub(self.channel)
        self.metadata = (("x-api-key", server.api_key),)

    def publish(self, request: pb.PublishRequest, timeout: float = 60) -> pb.PublishResponse:
        return self.stub.Publish(request, metadata=self.metadata, timeout=timeout)

    def close(self) -> None:
        self.channel.close()


class _Subscribe:
    """One Subscribe call: requests go through a queue, frames are iterated by the caller."""

    def __init__(self, conn: _Conn, first: pb.SubscribeRequest, timeout: float) -> None:
        self._out: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
        self._out.put(first)
        # Typed loosely: the stubs' streaming call type lacks cancel() in grpc-stubs.
        self.call: Any = conn.stub.Subscribe(
            self._requests(), metadata=conn.metadata, timeout=timeout
        )

    def _requests(self) -> Iterator[pb.SubscribeRequest]:
        while (item := self._out.get()) is not None:
            yield item

    def send(self, request: pb.SubscribeRequest) -> None:
        self._out.put(request)

    def frames(self) -> Iterator[pb.SubscribeResponse]:
        """Frames until the call ends; a deadline ends it quietly."""
        try:
            yield from self.call
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                raise

    def close(self) -> None:
        self._out.put(None)
        self.call.cancel()


def _messages_in(request: pb.PublishRequest) -> int:
    return len(request.batch.bodies) if request.HasField("batch") else len(request.messages)


def _batch_writers(
    server: TidegateServer,
    requests: list[pb.PublishRequest],
    writers: int,
    deadline: Deadline,
) -> tuple[int, float]:
    """``writers`` threads share ``requests`` round-robin; (messages acked, seconds)."""
    done = [0] * writers

    def run(slot: int) -> None:
        conn = _Conn(server)
        try:
            for request in requests[slot::writers]:
                if deadline.passed():
                    return
                conn.publish(request, timeout=max(1.0, deadline.left()))
                done[slot] += _messages_in(request)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline.left() + 5)
    return sum(done), time.perf_counter() - started


def produce(server: TidegateServer, tier: Tier, sizes: Sizes) -> Figure:
    # One compact batch (one destination, the bodies), as the SDK sends it.
    batch = pb.PublishBatch(
        topic=_TOPIC, lite_topics=[_LITE], bodies=[payload(sizes.message_bytes)] * sizes.batch
    )
    one = pb.PublishRequest(batch=batch)
    batches = sizes.produce_count // sizes.batch
    count, seconds = _batch_writers(
        server, [one] * batches, sizes.producers, Deadline.after(sizes.step_seconds)
    )
    return rate_figure(
        System.TIDEGATE,
        Metric.PRODUCE,
        tier,
        done=count,
        planned=batches * sizes.batch,
        seconds=seconds,
    )


def consume(server: TidegateServer, tier: Tier, sizes: Sizes) -> Figure:
    """Subscribe in a consumer group, ``batch`` per frame, each frame acked at once."""
    conn = _Conn(server)
    try:
        info = conn.stub.QueueInfo(
            pb.QueueInfoRequest(topic=_TOPIC, lite_topic=_LITE), metadata=conn.metadata, timeout=30
        )
        stored = int(info.next_offset)
        stream = _Subscribe(
            conn,
            pb.SubscribeRequest(
                open=pb.SubscribeOpen(
                    group=_GROUP,
                    lease_s=120,
                    max_batch_messages=sizes.batch,
                    max_lease_messages=sizes.batch * 10,  # the credits: frames back to back
                    compact=True,
                ),
                add=[
                    pb.Subscription(
                        topic=_TOPIC,
                        lite_topic=_LITE,
                        start=pb.StartPosition(kind=pb.StartPosition.EARLIEST),
                    )
                ],
                credits=sizes.batch * 10,
            ),
            timeout=sizes.step_seconds,
        )
        got = 0
        started = time.perf_counter()
        try:
            for frame in stream.frames():
                offsets = [d.offset for d in frame.messages]
                for run in frame.runs:  # all of _LITE: one queue
                    offsets += run.offsets
                if not offsets:
                    continue
                got += len(offsets)
                stream.send(
                    pb.SubscribeRequest(
                        ack=[pb.Settle(topic=_TOPIC, lite_topic=_LITE, offsets=offsets)],
                        credits=len(offsets),
                    )
                )
                if got >= stored:
                    break
            seconds = time.perf_counter() - started
            committed = _committed(conn, stored, Deadline.after(10))
        finally:
            stream.close()
    finally:
        conn.close()
    return rate_figure(
        System.TIDEGATE,
        Metric.CONSUME,
        tier,
        done=got,
        planned=stored,
        seconds=seconds,
        details={"committed_offset": float(committed)},
    )


def _committed(conn: _Conn, stored: int, deadline: Deadline) -> int:
    """The group's committed offset, once the last acks landed (or the bound passed)."""
    committed = 0
    while not deadline.passed():
        info = conn.stub.QueueInfo(
            pb.QueueInfoRequest(topic=_TOPIC, lite_topic=_LITE, group=_GROUP),
            metadata=conn.metadata,
            timeout=10,
        )
        committed = int(info.committed_offset)
        if committed >= stored:
            break
        time.sleep(0.05)
    return committed


def publish_one(server: TidegateServer, tier: Tier, sizes: Sizes) -> Figure:
    """Unary Publish of one message, waiting for each acknowledgement."""
    request = pb.PublishRequest(
        messages=[pb.OutboundMessage(topic="one", body=payload(sizes.message_bytes))]
    )
    conn = _Conn(server)
    latencies: list[float] = []
    deadline = Deadline.after(sizes.publish_one_seconds)
    try:
        server_cpu = server.cpu_seconds()
        client_cpu = time.process_time()
        started = time.perf_counter()
        while len(latencies) < sizes.publish_one_count and not deadline.passed():
            t0 = time.perf_counter()
            conn.publish(request, timeout=30)
            latencies.append((time.perf_counter() - t0) * 1e3)
        seconds = time.perf_counter() - started
        # CPU of the publishes alone, not of the Status calls below.
        cost = {
            "server_cpu_s": round(server.cpu_seconds() - server_cpu, 3),
            "client_cpu_s": round(time.process_time() - client_cpu, 3),
        }
        floor = _status_floor(conn, len(latencies), Deadline.after(2.0))
    finally:
        conn.close()
    return rate_figure(
        System.TIDEGATE,
        Metric.PUBLISH_ONE,
        tier,
        done=len(latencies),
        planned=len(latencies),  # bounded by time by design
        seconds=seconds,
        latencies_ms=latencies,
        details={"status_rpc_per_s": floor, **cost},
    )


def _status_floor(conn: _Conn, count: int, deadline: Deadline) -> float:
    """Unary Status calls per second, one at a time: the server's RPC floor.

    Status authenticates and answers from memory, so the gap between this
    and publish-one is the broker's own cost (append, fsync policy, index).
    """
    done = 0
    started = time.perf_counter()
    while done < count and not deadline.passed():
        conn.stub.Status(pb.StatusRequest(), metadata=conn.metadata, timeout=30)
        done += 1
    seconds = time.perf_counter() - started
    return round(done / seconds, 1) if seconds > 0 else 0.0


def topics(server: TidegateServer, tier: Tier, sizes: Sizes) -> list[Figure]:
    """One lite-topic per session (``sess/s-N``), one 16-byte message each; server RSS growth."""
    requests = [
        pb.PublishRequest(
            messages=[
                pb.OutboundMessage(topic="sess", lite_topics=[f"s-{i}"], body=TOPIC_BODY)
                for i in range(start, min(sizes.topics, start + sizes.topic_batch))
            ]
        )
        for start in range(0, sizes.topics, sizes.topic_batch)
    ]
    before = server.rss_bytes()
    count, seconds = _batch_writers(
        server, requests, sizes.producers, Deadline.after(sizes.step_seconds)
    )
    time.sleep(2.0)  # the same settle time for every system
    grown = server.rss_bytes() - before
    present = _sample_present(server, count)
    return [
        rate_figure(
            System.TIDEGATE,
            Metric.TOPIC_CREATE,
            tier,
            done=count,
            planned=sizes.topics,
            seconds=seconds,
        ),
        Figure(
            System.TIDEGATE,
            Metric.TOPIC_MEMORY,
            tier,
            value=round(max(0.0, grown / count), 1) if count else 0.0,
            count=count,
            seconds=seconds,
            complete=count >= sizes.topics,
            details={"rss_delta": float(grown), **present},
        ),
    ]


def _sample_present(server: TidegateServer, count: int) -> dict[str, float]:
    """Check that a spread sample of the lite-topics holds its one message.

    Status's lite-topic count is kept only for tenants with a limit, so the
    sample is the evidence the topics exist. It runs after the RSS reading:
    looking a cold topic up brings it into the hot set.
    """
    sample = sorted({*range(0, count, max(1, count // 100)), count - 1}) if count else []
    found = 0
    conn = _Conn(server)
    try:
        for i in sample:
            try:
                info = conn.stub.QueueInfo(
                    pb.QueueInfoRequest(topic="sess", lite_topic=f"s-{i}"),
                    metadata=conn.metadata,
                    timeout=30,
                )
            except grpc.RpcError as exc:
                if exc.code() is not grpc.StatusCode.NOT_FOUND:
                    raise
                continue
            found += info.next_offset == 1
    finally:
        conn.close()
    return {"sampled": float(len(sample)), "sampled_present": float(found)}


def fanin(server: TidegateServer, tier: Tier, sizes: Sizes, seed: int) -> list[Figure]:
    """One Subscribe stream holding every session lite-topic; the pacer publishes."""
    total = int(sizes.fanin_rate * sizes.fanin_seconds)
    lites = [f"s-{i}" for i in range(sizes.fanin_topics)]
    conn = _Conn(server)
    stream = _Subscribe(
        conn,
        pb.SubscribeRequest(credits=total + 1000),
        timeout=sizes.step_seconds + sizes.fanin_seconds + 60,
    )
    latest = pb.StartPosition(kind=pb.StartPosition.LATEST)
    latencies: list[float] = []
    frames = stream.frames()
    try:
        setup = Deadline.after(sizes.step_seconds)
        t0 = time.perf_counter()
        for at in range(0, len(lites), _SUBSCRIBE_CHUNK):
            stream.send(
                pb.SubscribeRequest(
                    add=[
                        pb.Subscription(topic="fan", lite_topic=x, start=latest)
                        for x in lites[at : at + _SUBSCRIBE_CHUNK]
                    ]
                )
            )
            for frame in frames:
                if frame.HasField("changed") or setup.passed():
                    break
        setup_s = time.perf_counter() - t0
        deadline = Deadline.after(sizes.fanin_seconds + 30)
        pace = Pace(
            System.TIDEGATE, server.port, "fan/s-", sizes.fanin_topics, total,
            sizes.fanin_rate, sizes.fanin_seconds + 30, seed, api_key=server.api_key,
        )  # fmt: skip
        pacer = Pacer(pace).start()
        try:
            for frame in frames:
                now = time.time()
                latencies.extend(max(0.0, (now - sent_at(d.body)) * 1e3) for d in frame.messages)
                if len(latencies) >= total or deadline.passed():
                    break
        finally:
            sent, seconds = pacer.finish()
    finally:
        stream.close()
        conn.close()
    return latency_figures(
        System.TIDEGATE,
        tier,
        latencies,
        planned=total,
        seconds=seconds,
        details={"setup_s": round(setup_s, 2), "sent_per_s": round(sent / seconds, 1)},
    )
