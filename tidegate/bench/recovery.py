"""recovery over a real server: fill its log, SIGKILL it, time the restart.

1. Start a server on an empty data directory (``empty_start_s``: spawn to
   SERVING, the cost of any start: interpreter, imports, bind).
2. Fill its log through gRPC to ``log_bytes`` (1 KiB messages, 100 per call,
   each into one of 100 lite-topics) from ``clients`` threads, watching the
   size of the log directory.
3. SIGKILL it mid-stream, restart it on the same data directory and time
   spawn to SERVING: ``recover_s``, what a client waits after a crash
   (torn-tail check, index catch-up, plus the start cost above).
4. SIGKILL it once more (nothing written since it came up) and open the
   store in this process: ``open_s``, the broker core's own reopen time of
   that log, with no process start in it.

It needs to kill and restart the server, so it cannot run with ``--server``.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from broker import Broker, BrokerSettings, FsyncPolicy
from broker.proto import broker_pb2 as pb
from tidegate.bench.figures import Deadline, Figures
from tidegate.bench.publish import publish_calls
from tidegate.bench.server import BenchServer, workdir
from tidegate.bench.target import Target

__all__ = ["recovery_over_server"]

_MESSAGE = 1024
_BATCH = 100
_WATCH_S = 0.05


def _log_size(log_dir: Path) -> int:
    try:
        return sum(entry.stat().st_size for entry in os.scandir(log_dir) if entry.is_file())
    except FileNotFoundError:
        return 0


def _fill(target: Target, log_dir: Path, log_bytes: int, clients: int) -> int:
    """Publish until the log directory holds ``log_bytes``; returns messages sent."""
    body = os.urandom(_MESSAGE)
    request = pb.PublishRequest(  # one request, sent again and again
        messages=[
            pb.OutboundMessage(topic="recovery", lite_topics=[f"s-{n}"], body=body)
            for n in range(_BATCH)
        ]
    )
    # Enough calls to fill the log twice over with framing counted: a bound, not a goal.
    calls = 2 * (log_bytes // (_MESSAGE * _BATCH) + 1)
    stop = threading.Event()
    deadline = Deadline(max(120.0, log_bytes / 5e6), f"filling the log to {log_bytes} bytes")
    result: list[int] = []
    failures: list[BaseException] = []

    def load() -> None:
        try:
            run = publish_calls(
                target, lambda _: request, calls, clients=clients, deadline=deadline, stop=stop
            )
            result.append(run.messages)
        except BaseException as exc:
            failures.append(exc)

    loader = threading.Thread(target=load, name="bench-recovery-fill", daemon=True)
    loader.start()
    while loader.is_alive() and _log_size(log_dir) < log_bytes and not deadline.expired():
        time.sleep(_WATCH_S)
    stop.set()
    loader.join(deadline.left() + 60.0)
    if failures:
        raise failures[0]
    if _log_size(log_dir) < log_bytes:
        raise deadline.error()
    return result[0] if result else 0


def recovery_over_server(
    *, log_bytes: int, fsync: str, clients: int, data_dir: str | None
) -> Figures:
    with workdir(data_dir) as (root, data):
        server = BenchServer(root, data, fsync)
        try:
            empty_start_s = server.start()
            started = time.perf_counter()
            messages = _fill(server.target(), data / "log", log_bytes, clients)
            fill_s = time.perf_counter() - started
            server.kill()
            recover_s = server.start()
            server.kill()
        finally:
            server.stop()
        started = time.perf_counter()
        broker = Broker.open(data, BrokerSettings(fsync=FsyncPolicy(fsync)))
        open_s = time.perf_counter() - started
        try:
            stats = broker.stats()
        finally:
            broker.close()
    return {
        "log_bytes": stats.log_end - stats.log_start,
        "messages": messages,
        "queues": stats.queues,
        "fill_s": round(fill_s, 3),
        "fill_mb_per_s": round((stats.log_end - stats.log_start) / fill_s / 1e6, 2),
        "empty_start_s": round(empty_start_s, 3),
        "recover_s": round(recover_s, 3),
        "open_s": round(open_s, 3),
    }
