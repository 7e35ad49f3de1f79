"""Broker figures over gRPC against a real `tidegate serve` (reports, never asserts).

    .venv/bin/python benchmarks/broker_grpc.py [--count 200000] [--fanin 100,100000]

produce: 1 KiB messages, batches of 100, fsync interval, 4 client threads.
consume: one plain Subscribe stream on one lite-topic from earliest.
fanin: one consumer subscribed to N lite-topics; 1,000 msgs/s to random ones;
       delivery latency = receive time - publish timestamp (one machine's clock).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.proto import broker_pb2 as pb
from tests.integration.server.conftest import Server
from tests.integration.server.streams import EARLIEST, LATEST, Stream


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


def produce(server: Server, count: int, threads: int = 4) -> dict[str, float]:
    body = b"x" * 1024
    per = count // threads // 100

    def run() -> None:
        client = server.stub("acme")
        request = pb.PublishRequest(
            messages=[pb.OutboundMessage(topic="bench", lite_topics=["p"], body=body)] * 100
        )
        for _ in range(per):
            client.Publish(request)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return {"msgs_per_s": round(per * threads * 100 / elapsed), "count": per * threads * 100}


def consume(server: Server, count: int) -> dict[str, float]:
    client = server.stub("acme")
    stream = Stream(
        client,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="bench", lite_topic="p", start=EARLIEST)], credits=20_000
        ),
    )
    stream.changed()
    got = 0
    start = time.perf_counter()
    while got < count:
        frame = stream.next(30)
        got += len(frame.messages)
        if frame.credits_left < 10_000:
            stream.send(pb.SubscribeRequest(credits=10_000))
    elapsed = time.perf_counter() - start
    stream.close()
    return {"msgs_per_s": round(got / elapsed)}


def fanin(
    server: Server, subscriptions: int, rate: int = 1000, seconds: float = 5.0
) -> dict[str, float]:
    client = server.stub("acme")
    topic = f"fan{subscriptions}"
    lites = [f"s-{i}" for i in range(subscriptions)]
    stream = Stream(client, pb.SubscribeRequest(credits=1_000_000))
    t0 = time.perf_counter()
    for at in range(0, subscriptions, 5000):
        stream.send(
            pb.SubscribeRequest(
                add=[
                    pb.Subscription(topic=topic, lite_topic=x, start=LATEST)
                    for x in lites[at : at + 5000]
                ]
            )
        )
        stream.changed(120)
    setup_s = time.perf_counter() - t0
    latencies: list[float] = []
    total = int(rate * seconds)
    done = threading.Event()

    def receive() -> None:
        while len(latencies) < total:
            frame = stream.next(30)
            now = time.time()
            latencies.extend((now - d.timestamp) * 1000 for d in frame.messages)
        done.set()

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    rng = random.Random(1)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        client.Publish(
            pb.PublishRequest(
                messages=[
                    pb.OutboundMessage(topic=topic, lite_topics=[rng.choice(lites)], body=b"m")
                ]
            )
        )
    done.wait(60)
    stream.close()
    return {
        "subscriptions": subscriptions,
        "setup_s": round(setup_s, 1),
        "deliver_p50_ms": round(pct(latencies, 50), 2),
        "deliver_p99_ms": round(pct(latencies, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--fanin", default="100,100000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), "interval").start()
        try:
            produced = produce(server, args.count)
            print(json.dumps({"produce": produced}), flush=True)
            print(json.dumps({"consume": consume(server, int(produced["count"]))}), flush=True)
            for n in (int(x) for x in args.fanin.split(",")):
                print(json.dumps({"fanin": fanin(server, n)}), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
