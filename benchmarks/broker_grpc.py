"""Broker figures over gRPC against a real `tidegate serve` (reports, never asserts).

    .venv/bin/python benchmarks/broker_grpc.py [--count 200000] [--fanin 100,100000]

A thin wrapper over `tidegate bench` (tidegate/bench/), which holds the
workloads: produce, consume, then fanin once per subscription count, each
against its own server on loopback, one JSON line each.
"""

from __future__ import annotations

import argparse
import json

from tidegate.bench import run_bench


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--fanin", default="100,100000")
    args = parser.parse_args()
    for name in ("produce", "consume"):
        figures = run_bench(name, {"count": args.count, "size": 1024, "batch": 100})
        print(json.dumps(figures, sort_keys=True), flush=True)
    for subscriptions in (int(x) for x in args.fanin.split(",")):
        figures = run_bench("fanin", {"subscriptions": subscriptions, "rate": 1000})
        print(json.dumps(figures, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
