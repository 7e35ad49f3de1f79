"""Load on a live server from the SDK: three tenants submitting, a simulated GPU
worker serving, and pub/sub with a slow subscriber (so ready sets and lag
have something to show).

Two workers, as a mixed fleet has: one engine reports its KV cache (as vLLM
does; its worker then reports no GPU memory, which such an engine reserves
up front), the other reports nothing of its own (as an in-process model),
so its worker reports the GPU memory its probe reads.

Submissions outpace the workers on purpose: tenants stay backlogged, which is
when fairness means something; bronze outpaces its rate limit, so admission
refuses some of its requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from scheduler.clock import MonotonicClock
from scheduler.sim.fleet import FleetModel
from tidegate import AsyncClient
from tidegate.inference import InferenceClient
from tidegate.inference_values import Refused, SubmitOptions
from workers.backends.simulated import SimulatedBackend, SimulatedConfig, SimulatedGpuProbe
from workers.engine_metrics import EngineSignals
from workers.worker import Worker, WorkerConfig

# tenant -> (requests per second, priority, deadline in seconds or 0)
RATES = {"gold": (3.0, 1, 0.0), "silver": (3.0, 0, 0.0), "bronze": (6.0, 0, 0.0)}
IMPATIENT = ("silver", 1.0, 0, 0.5)  # a few requests that give up: dropped at their deadline
FEEDS = [f"feed-{i}" for i in range(4)]


class _QuietEngine(SimulatedBackend):
    """A simulated GPU whose engine says nothing of its own load."""

    async def signals(self) -> EngineSignals:
        return EngineSignals()


@dataclass
class LoadReport:
    submitted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    published: int = 0
    received: int = 0
    worker_completed: int = 0


async def _submitter(
    client: InferenceClient,
    tenant: str,
    rate: float,
    priority: int,
    deadline_s: float,
    report: LoadReport,
) -> None:
    options = SubmitOptions(
        priority=priority, input_tokens=200, output_tokens=40, deadline_s=deadline_s
    )
    n = 0
    while True:
        n += 1
        try:
            await client.submit(f"{tenant} request {n}", options)
            report.submitted[tenant] = report.submitted.get(tenant, 0) + 1
        except Refused:
            report.refused[tenant] = report.refused.get(tenant, 0) + 1
        await asyncio.sleep(1.0 / rate)


async def _publisher(client: AsyncClient, report: LoadReport) -> None:
    n = 0
    while True:
        await client.publish("events", f"event {n}".encode(), lite=FEEDS[n % len(FEEDS)])
        report.published += 1
        n += 1
        await asyncio.sleep(0.05)


async def _slow_reader(client: AsyncClient, report: LoadReport) -> None:
    async with await client.subscribe("events", FEEDS, buffer=4) as sub:
        async for _ in sub:
            report.received += 1
            await asyncio.sleep(0.25)


async def drive(address: str, keys: dict[str, str], stop: asyncio.Event) -> LoadReport:
    """Load until ``stop`` is set; then stop it all and say what it did."""
    report = LoadReport()
    clock = MonotonicClock()
    model = FleetModel(decode_step_s=0.02, decode_step_per_seq_s=0.001, max_batch=4)
    fleet = InferenceClient(address, api_key=keys["fleet"])
    workers = []
    for name, kind in (("sim-0", SimulatedBackend), ("sim-1", _QuietEngine)):
        backend = kind(SimulatedConfig(model=model, worker_id=name, memory_used=0.6), clock)
        workers.append(
            Worker(
                WorkerConfig(name, capacity=2, feedback_interval_s=0.25),
                backend,
                fleet.lease,
                clock=clock,
                probe=SimulatedGpuProbe(backend),
            )
        )
    clients = {t: InferenceClient(address, api_key=keys[t]) for t in RATES}
    pubsub = AsyncClient(address, api_key=keys["gold"])
    tasks = [asyncio.create_task(w.run(), name=f"worker {w.name}") for w in workers]
    try:
        for worker in workers:
            await asyncio.wait_for(worker.connected.wait(), 30)
        tasks += [
            asyncio.create_task(_submitter(clients[t], t, *figures, report), name=t)
            for t, figures in RATES.items()
        ]
        tenant, rate, priority, deadline_s = IMPATIENT
        impatient = _submitter(clients[tenant], tenant, rate, priority, deadline_s, report)
        tasks.append(asyncio.create_task(impatient, name="impatient"))
        tasks += [
            asyncio.create_task(_publisher(pubsub, report), name="publisher"),
            asyncio.create_task(_slow_reader(pubsub, report), name="reader"),
        ]
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        for task in done:  # a load task that ended early broke: say how
            if task is not stopped:
                task.result()
    finally:
        for worker in workers:
            worker.stop()
        for task in tasks:
            if not task.get_name().startswith("worker"):
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        report.worker_completed = sum(w.stats.completed for w in workers)
        for client in (*clients.values(), fleet):
            await client.close()
        await pubsub.close()
    return report


class LoadThread:
    """:func:`drive` on an event loop of its own thread, so a test can look at
    the server (through Prometheus) while the load is still on."""

    def __init__(self, address: str, keys: dict[str, str]) -> None:
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._result: LoadReport | BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(address, keys), name="load")

    def _run(self, address: str, keys: dict[str, str]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._result = self._loop.run_until_complete(drive(address, keys, self._stop))
        except BaseException as exc:  # handed to stop()'s caller
            self._result = exc
        finally:
            self._loop.close()

    def start(self) -> LoadThread:
        self._thread.start()
        return self

    @property
    def failed(self) -> BaseException | None:
        result = self._result
        return result if isinstance(result, BaseException) else None

    def stop(self, timeout_s: float = 60.0) -> LoadReport:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the load did not stop"
        if isinstance(self._result, BaseException):
            raise self._result
        assert self._result is not None
        return self._result
