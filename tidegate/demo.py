"""``tidegate demo``: what ``make demo`` runs — the whole serving path on this machine.

1. a ``tidegate serve`` process with ``configs/demo.yaml`` (three tenants
   weighted 4:2:1, a fleet key) on a free loopback port and a temporary
   data directory, with API keys made up for this run;
2. a ``tidegate workers`` process: simulated-GPU workers as actors of a
   local Ray. Should Ray not come up in time, the same workers run as
   tasks of that process instead, and the screen says so;
3. a load generator in this process replaying a bursty three-tenant trace
   made from the config's ``workload:`` section, with a live table: per
   tenant admitted, refused, queued, served tokens, p99 wait, share of
   service against share of weight, and Jain's fairness index;
4. after the trace (about 80 s here) a summary, set against what the
   simulator predicts for the same trace and fleet.

It ends by itself within about two minutes. Ctrl-C stops everything: the
child processes are stopped by pid (SIGTERM, then SIGKILL after a grace
period), in their own sessions so the terminal's signal reaches only the demo.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from tidegate.demo_view import live_table, summary_table
from tidegate.errors import TidegateError
from tidegate.loadgen import LoadEvent, LoadGenerator, LoadOptions, LoadRow

__all__ = ["DemoPlan", "run"]

DEFAULT_SECONDS = 110.0  # the replay stops here at the latest
RAY_START_S = 90.0  # how long Ray may take to bring the workers up


@dataclass(frozen=True, slots=True)
class DemoPlan:
    """What the command line read from the demo's config (settings are its job)."""

    config: Path
    rows: tuple[LoadRow, ...]
    weights: Mapping[str, float]
    key_envs: Mapping[str, str]  # client tenant -> env var the server reads its key from
    fleet_key_env: str
    workers: int
    summarize: Callable[[Sequence[LoadEvent]], Mapping[str, Any]]
    predicted: Mapping[str, Any] | None = None  # the simulator's summary of the same trace


class DemoError(TidegateError):
    """A part of the demo did not start."""


class _Child:
    """A child process in its own session; its stdout lines go to a queue."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self._log = log.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own command line, built here
            argv,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(env),
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        for raw in stdout:
            self.lines.put(raw.decode(errors="replace").rstrip())
        self.lines.put(None)

    def wait_line(self, marker: str, timeout_s: float) -> str:
        """The first stdout line holding ``marker``; DemoError if it ends or times out."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(f"{self.name} did not get ready within {timeout_s:.0f} s")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise DemoError(f"{self.name} exited with {self.proc.wait()}")
            if marker in line:
                return line

    def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL (to its whole session) after ``grace_s``."""
        proc = self.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # Anything it left in its session (Ray's helpers after a hard stop) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
        self._log.close()


def _tidegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "tidegate", *args]


def run(args: argparse.Namespace, plan: DemoPlan) -> int:
    console = Console()
    headless = bool(args.headless) or not console.is_terminal
    if headless and console.width < 120:
        console = Console(width=120)  # a log or a pipe: room for the table's columns
    seconds = args.seconds if args.seconds is not None else DEFAULT_SECONDS
    rows = plan.rows
    keys = {tenant: secrets.token_urlsafe(18) for tenant in plan.key_envs}
    env = {**os.environ, plan.fleet_key_env: secrets.token_urlsafe(18)}
    env.update({plan.key_envs[t]: k for t, k in keys.items()})
    env.pop("TIDEGATE_API_KEY", None)  # the workers take the fleet key from the config
    children: list[_Child] = []
    with tempfile.TemporaryDirectory(prefix="tidegate-demo-") as tmp:
        work = Path(tmp)
        try:
            console.print(
                f"[bold]tidegate demo[/bold]: {len(rows)} requests from three tenants "
                f"(weights {', '.join(f'{t} {w:g}' for t, w in plan.weights.items())}) "
                f"on {plan.workers} simulated GPUs; Ctrl-C stops it"
            )
            server = _Child(
                "the server",
                _tidegate(
                    "serve",
                    "--config",
                    str(plan.config),
                    "--data-dir",
                    str(work / "data"),
                    "--listen",
                    "127.0.0.1:0",
                ),
                env,
                work / "server.log",
            )
            children.append(server)
            line = server.wait_line("listening on", 60.0)
            address = line.split("listening on ")[1].split()[0]
            console.print(f"server: listening on {address} (logs in a temporary directory)")
            workers, mode = _start_workers(
                args, plan, address=address, env=env, work=work, console=console
            )
            children.append(workers)
            console.print(f"workers: {mode}")
            events = asyncio.run(
                _replay(
                    plan,
                    rows,
                    keys=keys,
                    address=address,
                    seconds=seconds,
                    mode=mode,
                    headless=headless,
                    console=console,
                )
            )
            summary = plan.summarize(events)
            console.print(summary_table(summary, plan.predicted, plan.weights))
            unfinished = sum(1 for e in events if e.admitted and e.finish_s is None)
            if unfinished:
                console.print(f"{unfinished} admitted requests had not finished when it stopped.")
        except KeyboardInterrupt:
            console.print("\ninterrupted: stopping the workers and the server ...")
            raise
        finally:
            for child in reversed(children):  # workers first: they hand their leases back
                child.stop(grace_s=20.0 if child is not children[0] else 10.0)
    return 0


def _start_workers(
    args: argparse.Namespace,
    plan: DemoPlan,
    *,
    address: str,
    env: Mapping[str, str],
    work: Path,
    console: Console,
) -> tuple[_Child, str]:
    argv = _tidegate(
        "workers",
        "--server",
        address,
        "--config",
        str(plan.config),
        "--backend",
        "simulated",
        "--backend-option",
        "chunk_interval_s=0.25",
        "--capacity",
        "32",
        "--prefix",
        "sim-gpu",
    )
    if not args.no_ray:
        with console.status("starting a local Ray with the simulated-GPU workers ..."):
            child = _Child("the workers (Ray)", argv, env, work / "workers.log")
            try:
                line = child.wait_line("ready", RAY_START_S)
                return child, line.partition("tidegate workers: ")[2] or line
            except DemoError as exc:
                child.stop(grace_s=20.0)
                console.print(
                    f"[yellow]Ray did not bring the workers up ({exc}); running them as "
                    "tasks of one process instead (no Ray).[/yellow]"
                )
    child = _Child("the workers", [*argv, "--in-process"], env, work / "workers.log")
    line = child.wait_line("ready", 60.0)
    return child, line.partition("tidegate workers: ")[2] or line


async def _replay(
    plan: DemoPlan,
    rows: Sequence[LoadRow],
    *,
    keys: Mapping[str, str],
    address: str,
    seconds: float,
    mode: str,
    headless: bool,
    console: Console,
) -> list[LoadEvent]:
    generator = LoadGenerator(address, rows, keys, LoadOptions(drain_s=seconds))
    task = asyncio.create_task(generator.run())
    started = time.monotonic()

    def view() -> Any:
        return live_table(
            generator.live(),
            plan.weights,
            now=generator.now(),
            done=generator.done,
            total=generator.total,
            workers=mode,
        )

    def over() -> bool:
        if time.monotonic() - started > seconds:
            generator.stop()
        return task.done()

    if headless:
        last = 0.0
        while not over():
            await asyncio.sleep(0.5)
            if time.monotonic() - last >= 5.0:
                last = time.monotonic()
                console.print(view())
    else:
        with Live(view(), console=console, refresh_per_second=4) as live:
            while not over():
                await asyncio.sleep(0.25)
                live.update(view())
            live.update(view())
    return await task
