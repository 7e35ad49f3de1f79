"""``tidegate workers``: run a fleet until SIGTERM or SIGINT, then stop it cleanly.

Once every worker has an open Lease stream, one line goes to stdout::

    tidegate workers: 4 ready (ray local, cpu actors), backend simulated

which is what a supervisor (the demo, a test) waits for. On a signal the
workers stop (their runs are cancelled; the server puts those requests back
in the queue), the actors are killed and a Ray started here is shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from workers.fleet import FleetSpec, RayFleet, run_local

__all__ = ["serve_in_process", "serve_ray"]

Announce = Callable[[str], None]


def serve_in_process(spec: FleetSpec, replicas: int, announce: Announce) -> int:
    """Workers as tasks of this process's event loop."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_local(
            spec,
            replicas,
            stop=stop,
            on_ready=lambda ws: announce(f"{len(ws)} ready (in-process), backend {spec.backend}"),
        )

    asyncio.run(main())
    return 0


def serve_ray(
    spec: FleetSpec,
    replicas: int,
    announce: Announce,
    *,
    address: str | None,
    gpus: str = "auto",
    ready_timeout_s: float = 120.0,
) -> int:
    """Workers as Ray actors; returns once a signal came and the fleet is stopped."""
    with until_signalled() as stop:
        fleet = RayFleet(spec, replicas, address=address, gpus=gpus)
        try:
            fleet.start()
            ready = fleet.wait_ready(ready_timeout_s)
            announce(f"{ready} ready ({where_and_kind(fleet, address)}), backend {spec.backend}")
            while not stop.wait(1.0):
                pass
        finally:
            fleet.stop()
    return 0


@contextlib.contextmanager
def until_signalled() -> Iterator[threading.Event]:
    """An event that SIGTERM or SIGINT sets, for the block; the handlers before
    it are put back afterwards."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        del signum, frame
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def where_and_kind(fleet: RayFleet, address: str | None) -> str:
    """How a started fleet is announced: which Ray, which kind of actor."""
    where = f"ray {address}" if address else "ray local"
    return f"{where}, {'gpu actors' if fleet.on_gpu else 'cpu actors'}"
