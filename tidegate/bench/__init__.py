"""The ``tidegate bench`` workloads (CONTRACTS.md section 4).

``tidegate bench NAME [options] --json`` prints one JSON object with the
contract's keys for NAME and more. Where a workload runs:

- by default against a real ``tidegate serve`` it starts on a free loopback
  port with a temporary config and data directory (:mod:`.server`), over
  gRPC with the generated stubs (:mod:`.remote`, :mod:`.fanin`,
  :mod:`.recovery`); the server is stopped and the files removed afterwards,
  whatever happens;
- with ``--server HOST:PORT`` against that server instead (the API key from
  ``TIDEGATE_API_KEY`` or ``--api-key-file``); ``recovery`` needs to kill
  its server and refuses;
- with ``--in-process`` against the broker core in this process, no wire
  (:mod:`.local`): the ceiling the server's figures can approach, and what
  issue 2's targets are stated for. ``fanin`` needs the server's
  subscription engine and refuses.

``schedule`` times the scheduler's dispatch decision, which involves no
broker or wire: it always runs in this process. ``submit`` and ``relay``
measure the serving path (:mod:`.serving`): they start their own server and
worker processes, so they take neither ``--server`` nor ``--in-process``.

Every figure dict says where it was measured (``mode``) and under which
fsync policy. Benchmarks measure and report; they never assert a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from tidegate.bench import fanin, local, remote
from tidegate.bench.figures import Figures, percentile
from tidegate.bench.recovery import recovery_over_server
from tidegate.bench.server import local_server, workdir
from tidegate.bench.target import Target, rpc_failure
from tidegate.bench_names import BENCH_NAMES
from tidegate.errors import UsageError
from tidegate.options import ApiKey
from tidegate.scripting import api_key

__all__ = ["BENCH_NAMES", "DEFAULTS", "Figures", "Remote", "percentile", "run_bench", "run_cli"]

MiB = 1024 * 1024

# Defaults chosen so that a plain `tidegate bench NAME --json` ends in well
# under a minute on a loaded 2-core machine, server start included.
DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "produce": {"count": 200_000, "size": 1024, "batch": 100, "clients": 4},
    "consume": {"count": 100_000, "size": 1024, "batch": 100, "clients": 4},
    "lite-topics": {"count": 300_000, "clients": 2},
    "fanin": {"subscriptions": 100_000, "rate": 1000, "seconds": 5.0},
    "schedule": {"queued": 100_000, "tenants": 1_000},
    "recovery": {"log_bytes": 256 * MiB, "clients": 2},
    "submit": {"rate": 500, "seconds": 10.0},
    "relay": {"streams": 1000, "rate": 20, "seconds": 12.0, "workers": 4, "warmup_s": 2.0},
}


@dataclass(frozen=True, slots=True)
class Remote:
    """A server the bench did not start (``--server``)."""

    address: str
    api_key: ApiKey = field(repr=False)
    pid: int | None = None  # to read its RSS (lite-topics), when it runs on this machine


def run_bench(
    name: str,
    options: Mapping[str, Any],
    data_dir: str | None = None,
    *,
    in_process: bool = False,
    server: Remote | None = None,
) -> Figures:
    """Run one workload by name; ``options`` missing or None take :data:`DEFAULTS`."""
    if name not in DEFAULTS:
        known = ", ".join(BENCH_NAMES)
        raise UsageError(f"bench {name!r} is not a benchmark (known: {known})")
    opts: dict[str, Any] = {
        **DEFAULTS[name],
        **{k: v for k, v in options.items() if v is not None and k != "fsync"},
    }
    fsync: str | None = options.get("fsync")
    if in_process and server is not None:
        raise UsageError("--in-process and --server exclude each other")
    if name in ("submit", "relay"):
        if server is not None or in_process:
            raise UsageError(
                f"bench {name} starts its own server and workers; drop --server/--in-process"
            )
        if data_dir is not None:
            raise UsageError(
                f"bench {name} keeps its data in a temporary directory; drop --data-dir"
            )
        return _labelled(name, "server", fsync or "interval", _serving(name, opts, fsync))
    if name == "schedule":
        if server is not None:
            raise UsageError("bench schedule times the scheduler in this process; drop --server")
        return _labelled(name, "in-process", None, _local(name, opts, data_dir, "interval"))
    if in_process:
        if name == "fanin":
            raise UsageError(
                "bench fanin measures the server's subscription engine; drop --in-process"
            )
        fsync = fsync or "interval"
        return _labelled(name, "in-process", fsync, _local(name, opts, data_dir, fsync))
    if server is not None:
        if name == "recovery":
            raise UsageError(
                "bench recovery kills and restarts its server, so it cannot use --server"
            )
        if fsync is not None or data_dir is not None:
            raise UsageError(
                "--fsync and --data-dir set up the bench's own server; with --server "
                "that server's settings hold"
            )
        return _over_remote(name, opts, server)
    return _over_own_server(name, opts, data_dir, fsync or "interval")


def _serving(name: str, opts: dict[str, Any], fsync: str | None) -> Figures:
    from tidegate.bench import serving  # noqa: PLC0415 - starts worker processes; only here

    if name == "submit":
        return serving.run_submit(
            rate=opts["rate"], seconds=float(opts["seconds"]), fsync=fsync or "interval"
        )
    return serving.run_relay(
        streams=opts["streams"],
        rate=opts["rate"],
        seconds=float(opts["seconds"]),
        workers=opts["workers"],
        warmup_s=float(opts["warmup_s"]),
        fsync=fsync or "interval",
    )


def _labelled(name: str, mode: str, fsync: str | None, figures: Figures) -> Figures:
    head: Figures = {"workload": name, "mode": mode}
    if fsync is not None:
        head["fsync"] = fsync
    return {**head, **figures}


def _local(name: str, opts: dict[str, Any], data_dir: str | None, fsync: str) -> Figures:
    if name == "schedule":
        return local.schedule(queued=opts["queued"], tenants=opts["tenants"])
    runners: dict[str, Callable[[Path], Figures]] = {
        "produce": lambda d: local.produce(
            d, count=opts["count"], size=opts["size"], batch=opts["batch"], fsync=fsync
        ),
        "consume": lambda d: local.consume(
            d, count=opts["count"], size=opts["size"], batch=opts["batch"], fsync=fsync
        ),
        "lite-topics": lambda d: local.lite_topics(d, count=opts["count"], fsync=fsync),
        "recovery": lambda d: local.recovery(d, log_bytes=opts["log_bytes"], fsync=fsync),
    }
    with workdir(data_dir) as (_, data):
        return runners[name](data)


def _over_own_server(name: str, opts: dict[str, Any], data_dir: str | None, fsync: str) -> Figures:
    try:
        if name == "recovery":
            figures = recovery_over_server(
                log_bytes=opts["log_bytes"], fsync=fsync, clients=opts["clients"], data_dir=data_dir
            )
        else:
            with local_server(fsync, data_dir) as server:
                figures = _grpc_workload(name, opts, server.target())
    except grpc.RpcError as exc:
        raise rpc_failure(f"bench {name}", exc) from None
    return _labelled(name, "server", fsync, figures)


def _over_remote(name: str, opts: dict[str, Any], server: Remote) -> Figures:
    target = Target(server.address, server.api_key, pid=server.pid)
    try:
        status = target.status()
        figures = _grpc_workload(name, opts, target)
    except grpc.RpcError as exc:
        raise rpc_failure(f"bench {name}", exc) from None
    head = _labelled(name, "remote", status.fsync or None, {"server": server.address})
    return {**head, **figures}


def _grpc_workload(name: str, opts: dict[str, Any], target: Target) -> Figures:
    run_id = secrets.token_hex(4)  # names unique to this run (a shared --server)
    if name in ("produce", "consume"):
        workload = remote.produce if name == "produce" else remote.consume
        return workload(
            target,
            count=opts["count"],
            size=opts["size"],
            batch=opts["batch"],
            clients=opts["clients"],
            run_id=run_id,
        )
    if name == "lite-topics":
        return remote.lite_topics(
            target, count=opts["count"], clients=opts["clients"], run_id=run_id
        )
    return fanin.fanin(
        target,
        subscriptions=opts["subscriptions"],
        rate=opts["rate"],
        seconds=float(opts["seconds"]),
        run_id=run_id,
        rng=random.Random(opts.get("seed", 1)),
    )


_OPTION_KEYS = (
    "count",
    "size",
    "batch",
    "clients",
    "log_bytes",
    "queued",
    "tenants",
    "subscriptions",
    "rate",
    "seconds",
    "streams",
    "workers",
    "warmup_s",
    "fsync",
)


def run_cli(args: argparse.Namespace) -> int:
    options = {key: getattr(args, key, None) for key in _OPTION_KEYS}
    server = None
    if args.server is not None:
        host, sep, port = args.server.rpartition(":")
        if not (sep and host and port.isdigit()):
            raise UsageError(f"--server {args.server!r} must be HOST:PORT (e.g. 127.0.0.1:7400)")
        server = Remote(args.server, api_key(args, os.environ), pid=args.server_pid)
    elif args.server_pid is not None or args.api_key_file is not None:
        raise UsageError("--server-pid and --api-key-file go with --server HOST:PORT")
    with _sigterm_interrupts():
        figures = run_bench(
            args.name, options, args.data_dir, in_process=args.in_process, server=server
        )
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        _print_table(figures)
    return 0


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the server we started is stopped and the
    temporary files go (the command then exits 130, "interrupted")."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print_table(figures: Figures) -> None:
    title = f"tidegate bench {figures.get('workload', '')} ({figures.get('mode', '')})"
    table = Table(title=title, show_header=False)
    for key, value in figures.items():
        if key not in ("workload", "mode"):
            table.add_row(key, f"{value:,}" if isinstance(value, int | float) else str(value))
    Console().print(table)
