"""fanin over gRPC: one consumer subscribed to many lite-topics, a trickle of messages.

The consumer opens one plain Subscribe stream and adds ``subscriptions``
lite-topics ``fan-RUN/s-N`` (each from LATEST) in requests of
:data:`ADD_CHUNK`, waiting for each confirmation; ``setup_s`` is that time.
A publisher then sends ``rate`` messages per second to lite-topics drawn at
random (seeded) for ``seconds`` seconds, one message per call, or the
messages that fell due together in one call when it runs behind, so the
offered rate holds. Issue 3's point: the cost of serving the consumer grows
with what is ready, not with how many lite-topics it holds, so the
latencies should not grow with ``subscriptions``.

``deliver_*``: receive time minus the message's publish timestamp (the
server's clock, on this machine). ``send_to_deliver_*``: receive time minus
the time the publisher sent the call (carried in a property), which adds
the publish call's own path.
"""

from __future__ import annotations

import random
import time

from broker.proto import broker_pb2 as pb
from tidegate.bench.figures import Deadline, Figures, latency_ms
from tidegate.bench.stream import LATEST, SubscribeStream
from tidegate.bench.target import Target

__all__ = ["ADD_CHUNK", "fanin"]

ADD_CHUNK = 5000  # subscriptions added per request
MAX_CALL_MESSAGES = 100  # messages sent together when the publisher runs behind
DRAIN_S = 30.0  # how long to wait for the last messages after publishing ends
_SENT = "bench.sent"


def fanin(
    target: Target,
    *,
    subscriptions: int,
    rate: int,
    seconds: float,
    run_id: str,
    rng: random.Random,
) -> Figures:
    topic = f"fan-{run_id}"
    lites = [f"s-{n}" for n in range(subscriptions)]
    total = max(1, round(rate * seconds))
    stream = SubscribeStream(target, pb.SubscribeRequest(credits=min(total + 1000, 1_000_000)))
    try:
        setup = Deadline(600.0, f"subscribing to {subscriptions} lite-topics")
        started = time.perf_counter()
        for at in range(0, subscriptions, ADD_CHUNK):
            setup.check()
            stream.send(
                pb.SubscribeRequest(
                    add=[
                        pb.Subscription(topic=topic, lite_topic=lite, start=LATEST)
                        for lite in lites[at : at + ADD_CHUNK]
                    ]
                )
            )
            stream.changed()
        setup_s = time.perf_counter() - started
        sent, sent_s = _publish(target, topic, lites, rate=rate, total=total, rng=rng)
        deliver, end_to_end = _receive(stream, sent, Deadline(DRAIN_S, "fanin delivery"))
    finally:
        stream.close()
    return {
        "subscriptions": subscriptions,
        "rate": rate,
        "seconds": seconds,
        "setup_s": round(setup_s, 3),
        "sent": sent,
        "sent_per_s": round(sent / sent_s, 1) if sent_s > 0 else float(sent),
        "received": len(deliver),
        **latency_ms("deliver", deliver),
        **latency_ms("send_to_deliver", end_to_end),
    }


def _publish(
    target: Target, topic: str, lites: list[str], *, rate: int, total: int, rng: random.Random
) -> tuple[int, float]:
    """Publish ``total`` messages at ``rate``; returns (sent, seconds it took)."""
    sent = 0
    deadline = Deadline(total / rate + 60.0, "fanin publishing")
    with target.channel() as channel:
        publish = target.stub(channel).Publish
        start = time.perf_counter()
        while sent < total:
            deadline.check()
            due = min(total, int((time.perf_counter() - start) * rate) + 1) - sent
            if due <= 0:
                time.sleep(max(0.0, start + sent / rate - time.perf_counter()))
                continue
            n = min(due, MAX_CALL_MESSAGES)
            stamp = repr(time.time())
            publish(
                pb.PublishRequest(
                    messages=[
                        pb.OutboundMessage(
                            topic=topic,
                            lite_topics=[rng.choice(lites)],
                            body=b"m",
                            properties={_SENT: stamp},
                        )
                        for _ in range(n)
                    ]
                ),
                metadata=target.metadata,
                timeout=30,
            )
            sent += n
        elapsed = time.perf_counter() - start
    return sent, elapsed


def _receive(
    stream: SubscribeStream, sent: int, deadline: Deadline
) -> tuple[list[float], list[float]]:
    """Latencies of the deliveries, up to ``sent`` of them or until ``deadline``.

    The reader thread stamped each frame as it arrived while we published,
    so taking them off its queue now does not add to their latency. A lost
    message shows as ``received`` < ``sent``, not as a hang.
    """
    deliver: list[float] = []
    end_to_end: list[float] = []
    while len(deliver) < sent and not deadline.expired():
        got = stream.poll(max(0.0, deadline.left()))
        if got is None:
            break
        arrived, frame = got
        for d in frame.messages:
            deliver.append(arrived - d.timestamp)
            stamp = d.properties.get(_SENT)
            if stamp is not None:
                end_to_end.append(arrived - float(stamp))
    return deliver, end_to_end
