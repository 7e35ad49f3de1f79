"""The Inference API as an extension of the broker's server (``broker.server.ServerExtension``).

The composition root builds the runtime and hands a factory that receives
the server's hub; this module adds the servicer to the same grpc.aio server,
starts the runtime (replaying the requests queue) before the server accepts
calls, ends worker streams first when the server drains, and stops the
runtime before the hub's threads go. Background jobs (settings hot reload,
the fairness sampler of a :class:`~scheduler.metrics.SchedulerTelemetry`)
run between start and stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from grpc import aio
from prometheus_client.registry import Collector

from broker.tenancy import KeyRing
from scheduler.metrics import SchedulerCollector, SchedulerTelemetry
from scheduler.runtime import Runtime
from scheduler.service import SERVICE_NAME, InferenceService, add_inference_service

__all__ = ["InferenceExtension"]

Job = Callable[[], Coroutine[Any, Any, None]]


class InferenceExtension:
    """Serves ``tidegate.v1.Inference`` from ``runtime`` on the broker's server."""

    def __init__(
        self,
        runtime: Runtime,
        keys: KeyRing,
        jobs: Sequence[Job] = (),
        telemetry: SchedulerTelemetry | None = None,
    ) -> None:
        """``telemetry``: the one whose observer ``runtime`` was built with."""
        self.runtime = runtime
        self.service = InferenceService(runtime, keys)
        self.telemetry = telemetry
        if telemetry is not None:
            clock = runtime.core.clock

            async def sample() -> None:
                await telemetry.sample(runtime.stats, clock)

            jobs = (*jobs, sample)
        self._jobs = tuple(jobs)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def service_names(self) -> Sequence[str]:
        return (SERVICE_NAME,)

    def register(self, server: aio.Server) -> None:
        add_inference_service(self.service, server)

    async def start(self) -> None:
        await self.runtime.start()
        self._tasks = [asyncio.create_task(job(), name="inference-job") for job in self._jobs]

    async def drain(self) -> None:
        await self.runtime.drain()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runtime.stop()

    def collectors(self) -> Sequence[Collector]:
        if self.telemetry is not None:
            return (self.telemetry.collector(self.runtime.stats),)
        return (SchedulerCollector(self.runtime.stats),)
