"""The produce path's protobuf work in-process: per-message Publish against the compact batch.

    .venv/bin/python benchmarks/publish_wire.py [--batch 100] [--size 1024] [--rounds 2000]

For each form, microseconds per message of what the server does around the
store (request bytes -> broker requests; broker results -> response bytes,
with the Stored values the per-message form builds) and of what a client
does with the answer (parse it, one result per message). The store itself
is left out: its results are made up once. Reports, never asserts.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

from broker.hub import Outcomes, Stored
from broker.proto import broker_pb2 as pb
from broker.publish_wire import batch_requests, encode_batch, encode_response, publish_requests
from broker.types import PublishResult

LIMIT = 256 * 1024 * 1024


def per_message(data: bytes, results: list[PublishResult]) -> bytes:
    request = pb.PublishRequest.FromString(data)
    requests = publish_requests("acme", request.messages, LIMIT)
    stored = [Stored(r.offsets, r.timestamp, False, 0) for r in results]
    return encode_response(requests, stored)


def compact(data: bytes, results: list[PublishResult]) -> bytes:
    request = pb.PublishRequest.FromString(data)
    requests, _, _ = batch_requests("acme", request.batch, LIMIT)
    return encode_batch(requests, Outcomes([], results, 0))


def per_message_client(answer: bytes) -> int:
    response = pb.PublishResponse.FromString(answer)
    return len([(r.topic, tuple(r.offsets), r.timestamp, r.size) for r in response.results])


def compact_client(answer: bytes) -> int:
    batch = pb.PublishResponse.FromString(answer).batch
    firsts = tuple(batch.first_offsets)
    return len([tuple(f + i for f in firsts) for i in range(batch.stored)])


def timed(fn: Callable[[], object], rounds: int, per: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - t0) / rounds / per * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    n, body = args.batch, b"x" * args.size
    message = pb.OutboundMessage(topic="bench", lite_topics=["lane-0"], body=body)
    classic = pb.PublishRequest(messages=[message] * n).SerializeToString()
    batch = pb.PublishBatch(topic="bench", lite_topics=["lane-0"], bodies=[body] * n)
    short = pb.PublishRequest(batch=batch).SerializeToString()
    results = [PublishResult(1000 + i, 1.7e9, (5000 + i,)) for i in range(n)]
    forms = [
        ("messages", classic, per_message, per_message_client),
        ("batch", short, compact, compact_client),
    ]
    for name, data, server, client in forms:
        answer = server(data, results)
        server_us = timed(partial(server, data, results), args.rounds, n)
        client_us = timed(partial(client, answer), args.rounds, n)
        print(
            f"{name:>9}: request {len(data) / n:7.1f} B/msg, "
            f"response {len(answer) / n:6.2f} B/msg, server wire {server_us:.3f} us/msg, "
            f"client answer {client_us:.3f} us/msg"
        )


if __name__ == "__main__":
    main()
