"""Submit-to-grant latency over gRPC against a real `tidegate serve` (reports, never asserts).

    .venv/bin/python benchmarks/submit_to_grant.py [--rate 500] [--seconds 10] [--fsync always]

Starts a server on loopback with a temporary data directory, attaches one
worker (a Lease stream that completes every grant at once and gives its
credit back), then submits at a fixed open-loop rate from one process and
measures, per request, from the moment the client calls Submit to the
moment the worker's stream receives the grant (the same process's monotonic
clock). Also reports the Submit round trip (admission + durable write).
One JSON line. BENCH_SERVER_LOG=PATH keeps the server's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from grpc import aio

from broker.proto import inference_pb2 as pb
from broker.proto import inference_pb2_grpc as pb_grpc
from tidegate.bench.serving import spawn_server, stop

CONFIG = """\
tenants:
  acme:
    api_key_env: BENCH_ACME
    max_queued: 1000000
  fleet:
    role: worker
    api_key_env: BENCH_FLEET
broker:
  fsync: {fsync}
"""


def start_server(directory: Path, fsync: str) -> tuple[subprocess.Popen[str], str]:
    config = directory / "config.yaml"
    config.write_text(CONFIG.format(fsync=fsync))
    env = {**os.environ, "BENCH_ACME": "a-key", "BENCH_FLEET": "f-key"}
    log = open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "a")  # noqa: SIM115
    return spawn_server(config, directory / "data", env, stderr=log)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(address: str, rate: float, seconds: float) -> dict[str, float]:
    channel = aio.insecure_channel(address)
    stub = pb_grpc.InferenceStub(channel)
    outgoing: asyncio.Queue[pb.WorkerMessage] = asyncio.Queue()
    await outgoing.put(
        pb.WorkerMessage(hello=pb.WorkerHello(worker_id="bench", capacity=256), credits=256)
    )

    async def messages() -> AsyncIterator[pb.WorkerMessage]:
        while True:
            yield await outgoing.get()

    call = stub.Lease(messages(), metadata=(("x-api-key", "f-key"),))
    total = int(rate * seconds)
    started: dict[str, float] = {}
    granted: dict[str, float] = {}
    early: dict[str, float] = {}  # request id -> when its grant arrived
    arrived = asyncio.Event()

    async def worker() -> None:
        async for frame in call:
            now = time.monotonic()
            for grant in frame.grants:
                early[grant.request_id] = now
                arrived.set()
                done = pb.Completion(
                    request_id=grant.request_id,
                    lease_id=grant.lease_id,
                    input_tokens=1,
                    output_tokens=1,
                )
                await outgoing.put(pb.WorkerMessage(credits=1, completions=[done]))

    reader = asyncio.create_task(worker())
    acks: list[float] = []
    key = (("x-api-key", "a-key"),)

    async def one(payload: bytes) -> None:
        begin = time.monotonic()
        response = await stub.Submit(
            pb.SubmitRequest(payload=payload, input_tokens=10, output_tokens=10), metadata=key
        )
        acks.append(time.monotonic() - begin)
        started[response.request_id] = begin

    # Warm up (connections, the server's first calls), then the measured run.
    await asyncio.gather(*(one(b"warm") for _ in range(50)))
    started.clear()
    early.clear()
    acks.clear()
    tasks = []
    t0 = time.monotonic()
    for i in range(total):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(b"x" * 64)))
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while not started.keys() <= early.keys() and time.monotonic() < deadline:
        arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), deadline - time.monotonic())
    for rid, begin in started.items():
        if rid in early:
            granted[rid] = early[rid] - begin
    reader.cancel()
    call.cancel()
    await channel.close(None)
    waits = [v * 1000 for v in granted.values()]
    acked = [v * 1000 for v in acks]
    return {
        "requests": total,
        "offered_per_s": rate,
        "achieved_per_s": round(total / elapsed, 1),
        "granted": len(waits),
        "submit_to_grant_p50_ms": round(statistics.median(waits), 3),
        "submit_to_grant_p99_ms": round(percentile(waits, 0.99), 3),
        "submit_to_grant_max_ms": round(max(waits), 3),
        "submit_ack_p50_ms": round(statistics.median(acked), 3),
        "submit_ack_p99_ms": round(percentile(acked, 0.99), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fsync", choices=("always", "interval"), default="always")
    parser.add_argument(
        "--server", help="HOST:PORT of a running server (keys a-key / f-key, see CONFIG)"
    )
    args = parser.parse_args()
    if args.server:
        figures = asyncio.run(run(args.server, args.rate, args.seconds))
        print(json.dumps({"server": args.server, **figures}, sort_keys=True), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp:
        proc, address = start_server(Path(tmp), args.fsync)
        try:
            figures = asyncio.run(run(address, args.rate, args.seconds))
        finally:
            stop(proc)
    print(json.dumps({"fsync": args.fsync, **figures}, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
