"""Publishing from several client threads at once: what produce, consume,
lite-topics and recovery use to load a server.

Each thread has its own channel (its own HTTP/2 connection) and takes the
next call number from a shared counter, so ``calls`` calls are made in all,
however the threads are scheduled. Latency samples are per call: from
sending one Publish to its acknowledgement, which under ``fsync: always``
includes the fsync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from broker.proto import broker_pb2 as pb
from tidegate.bench.figures import Deadline
from tidegate.bench.target import CALL_TIMEOUT_S, Target, rpc_failure

__all__ = ["LANES", "PublishRun", "batches", "messages_in", "publish_calls"]

LANES = 8  # lite-topics a workload spreads its messages over (see consume)


@dataclass(frozen=True, slots=True)
class PublishRun:
    elapsed_s: float
    calls: int
    messages: int
    latencies_s: list[float]


def batches(
    topic: str, lanes: list[str], body: bytes, count: int, batch: int
) -> tuple[int, Callable[[int], pb.PublishRequest]]:
    """``count`` messages in calls of ``batch``, call i going to lane ``i % len(lanes)``.

    Returns the number of calls and a function from call number to request
    (built once per lane, so the loop measures the wire, not our encoding).
    Each call is a compact batch (``PublishRequest.batch``: one destination,
    the bodies), as the SDK sends such a batch.
    """
    calls = -(-count // batch)
    full = [
        pb.PublishRequest(
            batch=pb.PublishBatch(topic=topic, lite_topics=[lane], bodies=[body] * batch)
        )
        for lane in lanes
    ]
    rest = count - (calls - 1) * batch
    last_lane = lanes[(calls - 1) % len(lanes)]
    last = pb.PublishRequest(
        batch=pb.PublishBatch(topic=topic, lite_topics=[last_lane], bodies=[body] * rest)
    )

    def request(i: int) -> pb.PublishRequest:
        return last if i == calls - 1 else full[i % len(lanes)]

    return calls, request


def messages_in(request: pb.PublishRequest) -> int:
    """How many messages a Publish request carries, whichever its form."""
    return len(request.batch.bodies) if request.HasField("batch") else len(request.messages)


def publish_calls(
    target: Target,
    request: Callable[[int], pb.PublishRequest],
    calls: int,
    *,
    clients: int,
    deadline: Deadline,
    stop: threading.Event | None = None,
) -> PublishRun:
    """Make calls 0..calls-1 from ``clients`` threads; ends early once ``stop`` is set."""
    stop = stop or threading.Event()
    lock = threading.Lock()
    next_call = [0]
    done = [0, 0]  # calls, messages
    samples: list[list[float]] = []
    failures: list[BaseException] = []

    def take() -> int | None:
        with lock:
            i = next_call[0]
            if i >= calls or stop.is_set() or failures:
                return None
            next_call[0] = i + 1
            return i

    def client() -> None:
        mine: list[float] = []
        with lock:
            samples.append(mine)
        with target.channel() as channel:
            publish = target.stub(channel).Publish
            metadata = target.metadata
            while (i := take()) is not None:
                if deadline.expired():
                    failures.append(deadline.error())
                    return
                req = request(i)
                t0 = time.perf_counter()
                try:
                    publish(req, metadata=metadata, timeout=CALL_TIMEOUT_S)
                except grpc.RpcError as exc:
                    failures.append(rpc_failure("publish", exc))
                    return
                except BaseException as exc:
                    failures.append(exc)
                    return
                mine.append(time.perf_counter() - t0)
                with lock:
                    done[0] += 1
                    done[1] += messages_in(req)

    threads = [
        threading.Thread(target=client, name=f"bench-publish-{n}", daemon=True)
        for n in range(max(1, clients))
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        # Each call has its own timeout; the join bound is a backstop only.
        thread.join(max(1.0, deadline.left()) + CALL_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    if any(thread.is_alive() for thread in threads):
        stop.set()
        raise deadline.error()
    return PublishRun(elapsed, done[0], done[1], [s for mine in samples for s in mine])
