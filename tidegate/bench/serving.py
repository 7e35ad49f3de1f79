"""The serving path's targets, measured over real processes (reports, never asserts).

    tidegate bench submit [--rate 500] [--seconds 10] --json
    tidegate bench relay [--streams 1000] [--rate 20] [--seconds 12] [--warmup-s 2] --json

Both start a ``tidegate serve`` on loopback (fsync ``interval`` unless
``--fsync`` says otherwise, a temporary data directory) and worker
processes running the real lease loop (:class:`workers.worker.Worker`) over
the SDK, with a backend made for the measurement; the client is this
process. Times come from CLOCK_MONOTONIC, which all processes of the
machine share.

* ``submit``: open-loop Submit calls at ``--rate`` per second; per request,
  from the moment the client calls Submit to the moment the worker's
  backend is handed the request (its ``generate`` starts). The backend
  makes one chunk and finishes.
* ``relay``: ``--streams`` requests run at once, each making a chunk every
  ``1/--rate`` seconds for ``--seconds``; each chunk carries the worker's
  clock at the moment the worker handed it to its Lease stream, and the
  client subtracts it from its own clock when the chunk arrives on the
  reply lite-topic (worker publish -> server store -> client receive).
  ``p50_ms``/``p99_ms``/``max_ms`` are the steady state: chunks the workers
  sent from ``--warmup-s`` after the streams began until half a second
  before the first stream ended. Starting all the streams at once (their
  submits, grants and reply subscriptions) is a burst the server needs
  about a second and a half to work off at 1,000 streams, and all of them
  ending in the same instant is another; ``whole_run`` has the figures over
  every chunk, those included. Also each side's CPU over the streaming
  part: ``cores`` (CPU seconds per second) and ``cpu_us_per_chunk`` (per
  chunk the client received) for the server, the workers together and the
  client, and ``chunks_per_report`` (chunks per Lease message the workers
  sent). The machine is shared: read
  the CPU figures, which load moves less than latency, beside the times.

``tidegate bench submit|relay`` run these (:func:`run_submit`,
:func:`run_relay`); the workers are this module run as a script
(``python -m tidegate.bench.serving _worker ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scheduler.clock import MonotonicClock
from tidegate.client import InferenceClient, ReplyChunk, SubmitOptions, Submitted
from workers.backends.base import LENGTH, Chunk, GenerationEvent, GenerationRequest
from workers.backends.streams import Emit, Ending, RequestStreams
from workers.engine_metrics import EngineSignals
from workers.worker import Worker, WorkerConfig

SEND_INTERVAL_S = WorkerConfig("default").send_interval_s  # the workers' default
_COOLDOWN_S = 0.5  # before the first stream's end: the steady window stops here
KEYS = {"acme": "bench-acme", "fleet": "bench-fleet"}
CONFIG = """\
tenants:
  acme: {{api_key_env: BENCH_ACME, max_queued: 1000000}}
  fleet: {{role: worker, api_key_env: BENCH_FLEET}}
broker: {{fsync: {fsync}}}
scheduler:
  window: {{initial: {window}, minimum: 1, maximum: {window}}}
"""


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


# ------------------------------------------------------------------ backends


TICK_S = 0.005  # the timed backend's clock: one timer every 5 ms for all its streams


class _Ticking:
    """One stream of the timed backend: its emit, when it ends, what it made."""

    __slots__ = ("done", "emit", "end", "made")

    def __init__(self, emit: Emit, end: float, done: asyncio.Future[int]) -> None:
        self.emit = emit
        self.end = end
        self.made = 0
        self.done = done


class TimedBackend:
    """``start``: note when each request reached the backend, make one chunk.
    ``tick``: a chunk every ``interval_s`` for ``seconds``, carrying the clock.

    The streams share one timer, as an engine's streams share its decode step:
    every :data:`TICK_S` it wakes and emits for the streams whose turn it is.
    A stream's turns are ``interval_s`` apart from its first, so streams that
    start at different moments stay spread over the interval (in
    ``interval_s / TICK_S`` groups); each chunk carries the clock at its emit.
    A timer per stream per chunk cost this process more than the whole Lease
    path it stands in front of, and on this machine each wake-up of a loop
    costs ~65 us of CPU (a 1 ms tick alone took 0.065 of a core)."""

    def __init__(self, mode: str, interval_s: float, seconds: float) -> None:
        self.mode = mode
        self.interval_s = interval_s
        self.seconds = seconds
        self.started: dict[str, float] = {}
        self._streams = RequestStreams("timed")
        slots = max(1, round(interval_s / TICK_S)) if interval_s > 0 else 1
        self._slots: list[dict[int, _Ticking]] = [{} for _ in range(slots)]
        self._slot = 0  # whose turn it is at the next tick
        self._ticker: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return "timed"

    async def start(self) -> None:
        pass

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.started[request.request_id] = time.monotonic()

        async def produce(emit: Emit) -> Ending:
            if self.mode == "start":  # no output: the start path alone
                return Ending(LENGTH, 1, 0)
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            stream = _Ticking(emit, time.monotonic() + self.seconds, done)
            emit(Chunk(f"{time.monotonic():.6f}", 1))  # its first turn is now
            stream.made = 1
            slot = self._slots[(self._slot - 1) % len(self._slots)]  # next turn: an interval on
            slot[id(stream)] = stream
            if self._ticker is None:
                self._ticker = asyncio.create_task(self._tick())
            try:
                made = await done
            finally:
                slot.pop(id(stream), None)
            return Ending(LENGTH, 1, made)

        return self._streams.stream(request, produce)

    async def _tick(self) -> None:
        slots = self._slots
        next_at = time.monotonic()
        while True:
            next_at += TICK_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            slot = slots[self._slot]
            self._slot = (self._slot + 1) % len(slots)
            for key, stream in list(slot.items()):
                now = time.monotonic()
                if now >= stream.end:
                    del slot[key]
                    if not stream.done.done():
                        stream.done.set_result(stream.made)
                    continue
                stream.emit(Chunk(f"{now:.6f}", 1))
                stream.made += 1

    async def cancel(self, request_id: str) -> bool:
        return await self._streams.cancel(request_id)

    async def signals(self) -> EngineSignals:
        return EngineSignals()

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self._streams.cancel_all()


async def worker_main(args: argparse.Namespace) -> None:
    backend = TimedBackend(args.mode, args.interval_s, args.seconds)
    client = InferenceClient(args.server, api_key=KEYS["fleet"])
    worker = Worker(
        WorkerConfig(
            args.worker_id,
            capacity=args.capacity,
            feedback_interval_s=1.0,
            send_interval_s=args.send_interval_s,
        ),
        backend,
        client.lease,
        clock=MonotonicClock(),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.create_task(worker.run())
    await worker.connected.wait()
    print("ready", flush=True)
    await stop.wait()
    worker.stop()
    await task
    await client.close()
    out = {"started": backend.started, "stats": worker.stats.as_dict()}
    await asyncio.to_thread(Path(args.out).write_text, json.dumps(out))


# ------------------------------------------------------------------ processes


def start_server(
    directory: Path, window: int, fsync: str = "interval"
) -> tuple[subprocess.Popen[str], str]:
    config = directory / "config.yaml"
    config.write_text(CONFIG.format(window=window, fsync=fsync))
    env = {**os.environ, "BENCH_ACME": KEYS["acme"], "BENCH_FLEET": KEYS["fleet"]}
    return spawn_server(config, directory / "data", env)


def spawn_server(
    config: Path, data: Path, env: Mapping[str, str], stderr: IO[str] | int = subprocess.DEVNULL
) -> tuple[subprocess.Popen[str], str]:
    """``tidegate serve`` with ``config`` on a free loopback port; the process
    and its address, once it says where it listens."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and command
        [
            *(sys.executable, "-m", "tidegate", "serve", "--config", str(config)),
            *("--data-dir", str(data), "--listen", "127.0.0.1:0"),
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=dict(env),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("listening on ")[1].split()[0]


def start_worker(
    address: str,
    index: int,
    mode: str,
    *,
    capacity: int,
    interval_s: float,
    seconds: float,
    out: Path,
    send_interval_s: float = SEND_INTERVAL_S,
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and command
        [
            *(sys.executable, "-m", "tidegate.bench.serving", "_worker", "--server", address),
            *("--worker-id", f"bench-{index}", "--mode", mode, "--capacity", str(capacity)),
            *("--interval-s", str(interval_s), "--seconds", str(seconds), "--out", str(out)),
            *("--send-interval-s", str(send_interval_s)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if "ready" not in proc.stdout.readline():
        proc.kill()
        raise SystemExit("worker did not start")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# ------------------------------------------------------------------ measurements


async def submit_at_rate(
    address: str, rate: float, seconds: float
) -> tuple[dict[str, float], list[float]]:
    sent: dict[str, float] = {}
    acks: list[float] = []
    async with InferenceClient(address, api_key=KEYS["acme"]) as client:
        warm = SubmitOptions(input_tokens=1, output_tokens=1)
        await asyncio.gather(*(client.submit("warm-up", warm) for _ in range(50)))

        async def one(i: int) -> None:
            t = time.monotonic()
            done = await client.submit(f"req {i}", SubmitOptions(input_tokens=1, output_tokens=1))
            acks.append(time.monotonic() - t)
            sent[done.request_id] = t

        tasks = []
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(1.0)  # the last grants reach the worker
    return sent, acks


def run_submit(*, rate: float, seconds: float, fsync: str = "interval") -> dict[str, object]:
    """Submit to worker start, ``rate`` Submit calls a second for ``seconds``."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        server, address = start_server(directory, window=256, fsync=fsync)
        out = directory / "started.json"
        worker = start_worker(
            address, 0, "start", capacity=256, interval_s=0.0, seconds=0.0, out=out
        )
        try:
            began = time.monotonic()
            sent, acks = asyncio.run(submit_at_rate(address, rate, seconds))
            took = time.monotonic() - began
        finally:
            stop(worker)
            stop(server)
        started = json.loads(out.read_text())["started"]
    delays = [started[rid] - t for rid, t in sent.items() if rid in started]
    return {
        "target": "submit_to_worker_start",
        "rate_per_s": rate,
        "requests": len(sent),
        "started": len(delays),
        "achieved_per_s": round(len(sent) / took, 1),
        "p50_ms": ms(percentile(delays, 50)),
        "p99_ms": ms(percentile(delays, 99)),
        "max_ms": ms(max(delays, default=None)),
        "submit_ack_p50_ms": ms(percentile(acks, 50)),
        "submit_ack_p99_ms": ms(percentile(acks, 99)),
        "target_p99_ms": 5.0,
    }


def cpu_seconds(pid: int) -> float:
    """CPU (user + system) a process has used so far, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class _Relayed:
    """One chunk the client received: when the worker sent it, and its delay."""

    sent: float
    delay: float


async def relay(
    address: str, streams: int, seconds: float, warmup_s: float, pids: dict[str, int]
) -> dict[str, object]:
    """Relay figures (steady state and whole run), and each process's CPU over
    the streaming part per chunk received."""
    relayed: list[_Relayed] = []
    ends: list[float] = []
    async with InferenceClient(address, api_key=KEYS["acme"], reply_buffer=20000) as client:
        submitted: list[Submitted] = await asyncio.gather(
            *(
                client.submit(f"s{i}", SubmitOptions(input_tokens=1, output_tokens=100000))
                for i in range(streams)
            )
        )

        async def follow(s: Submitted) -> None:
            async for event in client.stream(s):
                # The first chunks of a stream can come before its subscription
                # is in place (they wait for it): they measure the start, not relay.
                if isinstance(event, ReplyChunk) and event.index >= 10:
                    with contextlib.suppress(ValueError):
                        sent = float(event.data)
                        relayed.append(_Relayed(sent, time.monotonic() - sent))
            ends.append(time.monotonic())

        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        client_before = time.process_time()
        began = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(follow(s) for s in submitted)), seconds + 120.0)
        took = time.monotonic() - began
        client_cpu = time.process_time() - client_before
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    steady_from = began + warmup_s
    steady_to = min(ends, default=began) - _COOLDOWN_S
    steady = [r.delay for r in relayed if steady_from <= r.sent <= steady_to]
    whole = [r.delay for r in relayed]
    # Every chunk the client received, the first ten of each stream included.
    received = len(relayed) + 10 * streams
    cpu["client"] = client_cpu
    workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
    return {
        "chunks": len(steady),
        "steady_s": round(max(0.0, steady_to - steady_from), 2),
        "warmup_s": warmup_s,
        "chunks_per_s": round(len(relayed) / took, 1),
        "p50_ms": ms(percentile(steady, 50)),
        "p99_ms": ms(percentile(steady, 99)),
        "max_ms": ms(max(steady, default=None)),
        "whole_run": {
            "chunks": len(whole),
            "p50_ms": ms(percentile(whole, 50)),
            "p99_ms": ms(percentile(whole, 99)),
            "max_ms": ms(max(whole, default=None)),
        },
        "cores": {
            "server": round(cpu["server"] / took, 3),
            "workers": round(workers / took, 3),
            "client": round(client_cpu / took, 3),
        },
        "cpu_us_per_chunk": {
            "server": round(cpu["server"] / received * 1e6, 1),
            "workers": round(workers / received * 1e6, 1),
            "client": round(client_cpu / received * 1e6, 1),
        },
    }


def run_relay(
    *,
    streams: int,
    rate: float,
    seconds: float,
    workers: int = 4,
    warmup_s: float = 2.0,
    send_interval_s: float = SEND_INTERVAL_S,
    fsync: str = "interval",
) -> dict[str, object]:
    """Chunk relay: ``streams`` requests, a chunk each every ``1/rate`` s for ``seconds``."""
    per_worker = -(-streams // workers)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        server, address = start_server(directory, window=per_worker, fsync=fsync)
        fleet = [
            start_worker(
                address,
                i,
                "tick",
                capacity=per_worker,
                interval_s=1.0 / rate,
                seconds=seconds,
                out=directory / f"{i}",
                send_interval_s=send_interval_s,
            )
            for i in range(workers)
        ]
        try:
            pids = {"server": server.pid} | {f"worker{i}": w.pid for i, w in enumerate(fleet)}
            figures = asyncio.run(relay(address, streams, seconds, warmup_s, pids))
        finally:
            for worker in fleet:
                stop(worker)
            stop(server)
        stats = [json.loads((directory / f"{i}").read_text())["stats"] for i in range(workers)]
    sent = sum(s["chunks"] for s in stats)
    reports = sum(s["reports"] for s in stats)
    figures["chunks_per_report"] = round(sent / max(1, reports), 2)
    return {
        "target": "chunk_relay",
        "streams": streams,
        "rate_per_stream": rate,
        "offered_chunks_per_s": streams * rate,
        "workers": workers,
        "send_interval_s": send_interval_s,
        **figures,
        "target_p99_ms": 10.0,
    }


def main() -> None:
    """The workers' entry point (``python -m tidegate.bench.serving _worker ...``)."""
    parser = argparse.ArgumentParser(prog="tidegate.bench.serving")
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("_worker")
    w.add_argument("--server", required=True)
    w.add_argument("--worker-id", required=True)
    w.add_argument("--mode", choices=("start", "tick"), required=True)
    w.add_argument("--capacity", type=int, required=True)
    w.add_argument("--interval-s", type=float, required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--send-interval-s", type=float, default=SEND_INTERVAL_S)
    asyncio.run(worker_main(parser.parse_args()))


if __name__ == "__main__":
    main()
