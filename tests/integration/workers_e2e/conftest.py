"""A real ``tidegate serve`` for the workers' end-to-end tests, and helpers to drive it.

Tenants: ``acme`` (may ask for priority 2), ``beta`` (one request a second),
and ``fleet`` (role: worker). Workers run in this process (:func:`local_fleet`)
or as ``tidegate workers`` processes (:func:`worker_process`), which a test
may kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tests.support.server import ServeProcess
from tidegate.client import InferenceClient, ReplyChunk, ReplyEnd, ReplyEvent, Submitted
from workers.fleet import FleetSpec, run_local
from workers.worker import Worker

KEYS = {"acme": "e2e-acme-key", "beta": "e2e-beta-key", "fleet": "e2e-fleet-key"}

CONFIG = """\
tenants:
  acme: {api_key_env: E2E_ACME, max_priority: 2}
  beta:
    api_key_env: E2E_BETA
    rate: {requests_per_s: 1, burst_s: 1}
  fleet: {role: worker, api_key_env: E2E_FLEET}
broker:
  fsync: interval
"""

ONE_AT_A_TIME = """\
scheduler:
  window: {initial: 1, minimum: 1, maximum: 1}
"""

# A fast simulated GPU: 100 tokens/s per sequence, one token per chunk or so.
FAST_MODEL = {
    "prefill_tokens_per_s": 100000.0,
    "decode_step_s": 0.01,
    "decode_step_per_seq_s": 0.0,
    "max_batch": 16,
}


def env() -> dict[str, str]:
    return {
        **os.environ,
        "E2E_ACME": KEYS["acme"],
        "E2E_BETA": KEYS["beta"],
        "E2E_FLEET": KEYS["fleet"],
    }


@dataclass
class Server(ServeProcess):
    extra: str = ""

    def start(self) -> Server:
        self.launch(CONFIG + self.extra, env())
        return self


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(extra: str = "", name: str = "srv") -> Server:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        server = Server(directory, extra).start()
        made.append(server)
        return server

    yield make
    for server in made:
        if server.proc is not None:
            server.stop(timeout=20, kill_late=True)


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


def spec(server: Server, **options: object) -> FleetSpec:
    backend_options: dict[str, object] = {"model": FAST_MODEL, "chunk_interval_s": 0.005}
    backend_options.update(options)
    return FleetSpec(server.address, KEYS["fleet"], "simulated", backend_options, capacity=8)


@contextlib.asynccontextmanager
async def local_fleet(fleet: FleetSpec, replicas: int = 1) -> AsyncIterator[list[Worker]]:
    """Workers as tasks of this loop, connected before the body runs."""
    stop = asyncio.Event()
    ready: asyncio.Future[list[Worker]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_local(fleet, replicas, stop=stop, on_ready=ready.set_result))
    try:
        yield await asyncio.wait_for(ready, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass
class Reply:
    """One request's reply as a client saw it."""

    submitted: Submitted
    chunks: list[ReplyChunk] = field(default_factory=list)
    ends: list[ReplyEnd] = field(default_factory=list)

    @property
    def text(self) -> str:
        return b"".join(c.data for c in self.chunks).decode()

    def check_whole(self) -> ReplyEnd:
        """One end, after chunks 0, 1, 2 ... each once."""
        assert [c.index for c in self.chunks] == list(range(len(self.chunks)))
        assert len(self.ends) == 1, self.ends
        assert self.ends[0].chunks == len(self.chunks)
        return self.ends[0]


async def read_reply(
    client: InferenceClient,
    submitted: Submitted,
    on_chunk: Callable[[ReplyChunk], None] | None = None,
    timeout_s: float = 60.0,
) -> Reply:
    reply = Reply(submitted)

    async def follow() -> None:
        event: ReplyEvent
        async for event in client.stream(submitted):
            if isinstance(event, ReplyEnd):
                reply.ends.append(event)
            else:
                reply.chunks.append(event)
                if on_chunk is not None:
                    on_chunk(event)

    await asyncio.wait_for(follow(), timeout_s)
    return reply


def worker_process(server: Server, prefix: str, log: Path, *extra: str) -> subprocess.Popen[str]:
    """A ``tidegate workers --in-process`` process; returns once its workers are ready."""
    with log.open("a") as err:
        proc = _spawn_workers(server, prefix, err, extra)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "ready" not in line:
        proc.kill()
        raise RuntimeError(f"workers did not start: {line!r}\n{log.read_text()}")
    return proc


def _spawn_workers(
    server: Server, prefix: str, err: IO[str], extra: tuple[str, ...]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidegate",
            "workers",
            "--server",
            server.address,
            "--in-process",
            "--prefix",
            prefix,
            "--backend",
            "simulated",
            "--backend-option",
            "chunk_interval_s=0.005",
            *(f"--backend-option=model.{k}={v}" for k, v in FAST_MODEL.items()),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**env(), "TIDEGATE_API_KEY": KEYS["fleet"]},
    )
