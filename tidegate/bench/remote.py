"""produce, consume and lite-topics over gRPC against a running server.

Names carry a run id (``produce-1a2b3c4d/p-0``), so runs against one
long-lived ``--server`` never read each other's messages.

- produce: ``clients`` threads publish ``count`` messages of ``size`` bytes
  in calls of ``batch`` over :data:`~tidegate.bench.publish.LANES`
  lite-topics. ``publish_p99_ms`` is the per-call acknowledgement latency.
- consume: see :func:`consume`.
- lite-topics: one message to each of ``count`` new lite-topics, 1,000 per
  call; ``rss_bytes`` is the growth of the *server's* resident memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

from broker.proto import broker_pb2 as pb
from tidegate.bench.figures import Deadline, Figures, latency_ms, rss_bytes
from tidegate.bench.publish import LANES, batches, publish_calls
from tidegate.bench.stream import EARLIEST, Frame, SubscribeStream
from tidegate.bench.target import CALL_TIMEOUT_S, Target

__all__ = ["consume", "lite_topics", "produce"]

LITE_BATCH = 1000  # lite-topics created per publish call
MAX_CREDITS = 50_000
LIVE_S = 2.0  # longest live phase of consume
TIME_LIMIT_S = 600.0  # any one phase of a workload


def _lanes() -> list[str]:
    return [f"p-{n}" for n in range(LANES)]


def produce(
    target: Target, *, count: int, size: int, batch: int, clients: int, run_id: str
) -> Figures:
    """``count`` messages of ``size`` bytes, ``batch`` per call, from ``clients`` threads."""
    calls, request = batches(f"produce-{run_id}", _lanes(), os.urandom(size), count, batch)
    run = publish_calls(
        target, request, calls, clients=clients, deadline=Deadline(TIME_LIMIT_S, "produce")
    )
    return {
        "count": run.messages,
        "size": size,
        "batch": batch,
        "clients": clients,
        "calls": run.calls,
        "elapsed_s": round(run.elapsed_s, 4),
        "msgs_per_s": round(run.messages / run.elapsed_s, 1),
        "mb_per_s": round(run.messages * size / run.elapsed_s / 1e6, 2),
        **latency_ms("publish", run.latencies_s),
    }


def consume(
    target: Target, *, count: int, size: int, batch: int, clients: int, run_id: str
) -> Figures:
    """Drain a backlog through one consumer-group stream, then measure live delivery.

    1. Backlog (untimed fill): ``count`` messages over the lanes. One
       Subscribe stream in a consumer group (so every ack is a real commit)
       takes them, ``batch`` per lite-topic at a time, acking each frame's
       messages as it arrives and topping up credits as they run low.
       ``msgs_per_s`` is ``count`` over the time from opening the stream to
       the last message: the drain rate.
    2. Live: on the same stream, a paced publisher sends batches at half the
       drain rate for up to :data:`LIVE_S` seconds (at most ``count``
       messages); ``deliver_*`` is each message's receive time minus its
       publish timestamp (the server's clock; one machine, so one clock).
       Latency on the backlog would only measure how old the backlog is.
    """
    topic, lanes = f"consume-{run_id}", _lanes()
    body = os.urandom(size)
    calls, request = batches(topic, lanes, body, count, batch)
    publish_calls(
        target, request, calls, clients=clients, deadline=Deadline(TIME_LIMIT_S, "consume fill")
    )
    window = max(min(MAX_CREDITS, 4 * batch * LANES), batch)
    first = pb.SubscribeRequest(
        open=pb.SubscribeOpen(
            group=f"g-{run_id}",
            lease_s=120.0,
            max_batch_messages=min(batch, 1000),
            max_lease_messages=1000,  # a backlog: several frames per lease, back to back
            compact=True,
        ),
        add=[pb.Subscription(topic=topic, lite_topic=lane, start=EARLIEST) for lane in lanes],
        credits=window,
    )
    started = time.perf_counter()
    stream = SubscribeStream(target, first)
    try:
        consumer = _Consumer(stream, window)
        consumer.take(count, Deadline(TIME_LIMIT_S, "consume drain"))
        drain_s = time.perf_counter() - started
        drain_rate = count / drain_s
        live_rate = max(float(batch), drain_rate / 2)
        live_calls = max(1, min(count, int(live_rate * LIVE_S)) // batch)
        latencies = _live(
            target,
            consumer,
            topic=topic,
            lanes=lanes,
            body=body,
            batch=batch,
            calls=live_calls,
            rate=live_rate,
        )
    finally:
        stream.close()
    return {
        "count": count,
        "size": size,
        "batch": batch,
        "clients": clients,
        "elapsed_s": round(drain_s, 4),
        "msgs_per_s": round(drain_rate, 1),
        "mb_per_s": round(drain_rate * size / 1e6, 2),
        "live_msgs": len(latencies),
        "live_rate_per_s": round(live_rate, 1),
        **latency_ms("deliver", latencies),
    }


class _Consumer:
    """Receive, ack each frame, keep ``window`` credits granted."""

    def __init__(self, stream: SubscribeStream, window: int) -> None:
        self.stream = stream
        self.window = window
        self.granted = window
        self.received = 0

    def take(self, count: int, deadline: Deadline) -> list[Frame]:
        """Frames until ``count`` more messages came (the last frame may hold more)."""
        frames: list[Frame] = []
        goal = self.received + count
        while self.received < goal:
            deadline.check()
            arrived, frame = self.stream.next(min(self.stream.stall_s, max(0.1, deadline.left())))
            if not frame.messages and not frame.runs:
                continue
            frames.append((arrived, frame))
            offsets: dict[tuple[str, str], list[int]] = defaultdict(list)
            for d in frame.messages:
                offsets[(d.topic, d.lite_topic)].append(d.offset)
            for run in frame.runs:
                offsets[(run.topic, run.lite_topic)] += run.offsets
            self.received += sum(len(o) for o in offsets.values())
            reply = pb.SubscribeRequest(
                ack=[pb.Settle(topic=t, lite_topic=q, offsets=o) for (t, q), o in offsets.items()]
            )
            outstanding = self.granted - self.received
            if outstanding < self.window // 2:
                reply.credits = self.window - outstanding
                self.granted += reply.credits
            self.stream.send(reply)
        return frames


def _live(
    target: Target,
    consumer: _Consumer,
    *,
    topic: str,
    lanes: list[str],
    body: bytes,
    batch: int,
    calls: int,
    rate: float,
) -> list[float]:
    """Publish ``calls`` batches paced at ``rate`` msgs/s; the consumer's latencies."""
    _, request = batches(topic, lanes, body, calls * batch, batch)
    failures: list[BaseException] = []

    def paced() -> None:
        try:
            with target.channel() as channel:
                publish = target.stub(channel).Publish
                start = time.perf_counter()
                for i in range(calls):
                    pause = start + i * batch / rate - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    publish(request(i), metadata=target.metadata, timeout=30)
        except BaseException as exc:
            failures.append(exc)

    publisher = threading.Thread(target=paced, name="bench-live-publish", daemon=True)
    publisher.start()
    try:
        frames = consumer.take(calls * batch, Deadline(LIVE_S + 60.0, "consume live phase"))
    finally:
        publisher.join(60)
    if failures:
        raise failures[0]
    return [
        arrived - timestamp
        for arrived, frame in frames
        for timestamp in [
            *(d.timestamp for d in frame.messages),
            *(t for run in frame.runs for t in run.timestamps),
        ]
    ]


def lite_topics(target: Target, *, count: int, clients: int, run_id: str) -> Figures:
    """One 16-byte message to each of ``count`` new lite-topics ``lt-RUN/s-N``."""
    topic = f"lt-{run_id}"
    body = b"0123456789abcdef"
    calls = -(-count // LITE_BATCH)

    def request(i: int) -> pb.PublishRequest:
        first, end = i * LITE_BATCH, min(count, (i + 1) * LITE_BATCH)
        return pb.PublishRequest(
            messages=[
                pb.OutboundMessage(topic=topic, lite_topics=[f"s-{n}"], body=body)
                for n in range(first, end)
            ]
        )

    # One call first, so the server's gRPC and store paths are warm and their
    # one-off allocations do not count against the lite-topics.
    with target.channel() as channel:
        target.stub(channel).Publish(
            pb.PublishRequest(messages=[pb.OutboundMessage(topic=f"{topic}-warm", body=body)]),
            metadata=target.metadata,
            timeout=CALL_TIMEOUT_S,
        )
    before = rss_bytes(target.pid) if target.pid is not None else None
    run = publish_calls(
        target, request, calls, clients=clients, deadline=Deadline(TIME_LIMIT_S, "lite-topics")
    )
    figures: Figures = {
        "count": run.messages,
        "clients": clients,
        "elapsed_s": round(run.elapsed_s, 3),
        "create_per_s": round(run.messages / run.elapsed_s, 1),
        **latency_ms("publish", run.latencies_s),
    }
    if before is None or target.pid is None:
        # A server we did not start and whose pid we were not told: no RSS to read.
        figures.update(rss_bytes=None, bytes_per_topic=None)
    else:
        growth = max(0, rss_bytes(target.pid) - before)
        figures.update(rss_bytes=growth, bytes_per_topic=round(growth / run.messages, 1))
    return figures
