"""A fleet of workers: Ray actors, one per GPU, or asyncio tasks in this process.

* :class:`RayFleet` — one Ray actor per worker. On a cluster with GPUs each
  actor asks for ``num_gpus=1`` (so one per GPU, and its NVML probe watches
  the GPU Ray gave it); without GPUs, or for the simulated backend, actors
  are CPU actors. ``max_restarts=-1``: Ray restarts an actor whose process
  died; the server has already put its leases back in the queue, and the
  restarted actor reconnects under the same worker id. Without an address
  it starts a local Ray (no dashboard).
* :func:`run_local` — the same workers as tasks of one event loop, for
  machines where starting Ray is not worth it (tests, the demo's fallback).

Each worker is built by :func:`build_worker` from a :class:`FleetSpec`,
which is plain data so Ray can ship it to an actor. A :class:`RayFleet`
can grow by one actor (:meth:`RayFleet.add_replica`, within what Ray has
room for: :meth:`RayFleet.headroom`) and shrink by one, draining it first
(:meth:`RayFleet.drain_replica`, see :mod:`workers.drain`);
:mod:`workers.scaling` does so on the server's queue depth.

Ray is imported only inside the functions that need it, so importing this
module (and ``tidegate --help``) stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scheduler.clock import Clock, MonotonicClock
from tidegate.client import InferenceClient
from workers.backends.factory import create_backend
from workers.backends.simulated import SimulatedBackend, SimulatedGpuProbe
from workers.drain import DrainGate
from workers.errors import ProbeUnavailableError, WorkerConfigError
from workers.probe import GpuProbe, NvmlProbe
from workers.worker import Worker, WorkerConfig

__all__ = ["FleetSpec", "RayFleet", "WorkerActor", "build_worker", "run_local"]

log = logging.getLogger("tidegate.fleet")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """What every worker of a fleet is made of (plain data: Ray pickles it).

    ``api_key``: the fleet tenant's key (``role: worker``); kept out of reprs.
    Worker ids are ``{prefix}-{index}``, stable across actor restarts.
    """

    server: str
    api_key: str = field(repr=False)
    backend: str = "simulated"
    backend_options: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    capacity: int = 64
    prefix: str = "worker"
    feedback_interval_s: float = 0.5
    lease_s: float = 0.0
    default_max_tokens: int = 256

    def __post_init__(self) -> None:
        if not self.api_key:
            raise WorkerConfigError("the fleet needs an API key (a tenant with role: worker)")

    def worker_id(self, index: int) -> str:
        return f"{self.prefix}-{index}"


def _probe(backend: object, gpu_devices: list[int] | None) -> GpuProbe | None:
    if isinstance(backend, SimulatedBackend):
        return SimulatedGpuProbe(backend)
    try:
        return NvmlProbe(gpu_devices)
    except ProbeUnavailableError as exc:
        log.info("no GPU probe (%s): feedback from the engine and latency only", exc)
        return None


def build_worker(
    spec: FleetSpec,
    index: int,
    *,
    clock: Clock,
    gpu_devices: list[int] | None = None,
    gate: DrainGate | None = None,
) -> tuple[Worker, InferenceClient]:
    """Worker ``index`` of the fleet and the client its Lease streams go through
    (close the client after the worker's run ends). ``gate``: its streams pass
    through it, so the worker can be drained."""
    worker_id = spec.worker_id(index)
    options = dict(spec.backend_options)
    if spec.backend == "simulated":
        options.setdefault("worker_id", worker_id)
        options.setdefault("seed", index)
    backend = create_backend(spec.backend, options, clock=clock)
    client = InferenceClient(spec.server, api_key=spec.api_key)
    config = WorkerConfig(
        worker_id=worker_id,
        capacity=spec.capacity,
        feedback_interval_s=spec.feedback_interval_s,
        lease_s=spec.lease_s,
        default_max_tokens=spec.default_max_tokens,
        labels={"index": str(index), "pid": str(os.getpid())},
    )
    connect = client.lease if gate is None else gate.wrap(client.lease)
    worker = Worker(config, backend, connect, clock=clock, probe=_probe(backend, gpu_devices))
    return worker, client


# ------------------------------------------------------------------ in-process


async def run_local(
    spec: FleetSpec,
    replicas: int,
    *,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[list[Worker]], None] | None = None,
) -> None:
    """Run ``replicas`` workers as tasks of this loop until ``stop`` is set."""
    clock = clock or MonotonicClock()
    stop = stop or asyncio.Event()
    built = [build_worker(spec, i, clock=clock) for i in range(replicas)]
    workers = [w for w, _ in built]
    tasks = [asyncio.create_task(w.run(), name=f"worker:{w.name}") for w in workers]
    try:
        if on_ready is not None:
            await asyncio.gather(*(w.connected.wait() for w in workers))
            on_ready(workers)
        await stop.wait()
    finally:
        for worker in workers:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, client in built:
            await client.close()


# ------------------------------------------------------------------ Ray


class WorkerActor:
    """The body of a Ray actor: one worker on its own event loop in a thread.

    The loop starts in the constructor, so when Ray restarts a dead actor
    (which reruns the constructor) the worker comes back by itself.
    """

    def __init__(self, spec: FleetSpec, index: int) -> None:
        self.index = index
        self._loop = asyncio.new_event_loop()
        gpus = _ray_gpu_ids()
        self._gate = DrainGate()
        self._worker, self._client = build_worker(
            spec, index, clock=MonotonicClock(), gpu_devices=gpus or None, gate=self._gate
        )
        self._thread = threading.Thread(target=self._serve, name="tidegate-worker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        try:
            await self._worker.run()
        finally:
            await self._client.close()

    def ready(self, timeout_s: float = 30.0) -> bool:
        """Whether the worker has an open Lease stream (waits up to ``timeout_s``)."""
        future = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(self._worker.connected.wait(), timeout_s), self._loop
        )
        try:
            future.result(timeout_s + 1.0)
        except TimeoutError:
            return False
        return True

    def stats(self) -> dict[str, Any]:
        return {"index": self.index, "pid": os.getpid(), **self._worker.stats.as_dict()}

    def pid(self) -> int:
        return os.getpid()

    def drain(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Take no new request, wait (up to ``timeout_s``) until every lease the
        worker holds is over, then stop it. Returns its stats, with ``drained``
        (False: the time ran out, and what still ran was stopped: the server
        puts it back in the queue) and ``late_grants`` (grants the server sent
        before it read the drain, which the worker ran)."""

        async def drained() -> bool:
            self._gate.drain(self._worker)
            try:
                await asyncio.wait_for(self._gate.idle.wait(), timeout_s)
            except TimeoutError:
                return False
            return True

        ok = False
        if self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(drained(), self._loop)
            with contextlib.suppress(Exception):
                ok = future.result(timeout_s + 5.0)
        self.shutdown()
        return {**self.stats(), "drained": ok, "late_grants": self._gate.late_grants}

    def shutdown(self) -> None:
        """Stop the worker and wait for it (Ray kills the process after)."""
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._worker.stop)
        self._thread.join(10.0)


def _ray() -> Any:
    """The ray module, imported on first use (starting it is the costly part)."""
    import ray  # noqa: PLC0415

    return ray


def _ray_gpu_ids() -> list[int]:
    ray = _ray()
    ids: list[int] = []
    with contextlib.suppress(Exception):
        for item in ray.get_gpu_ids():
            with contextlib.suppress(ValueError):
                ids.append(int(item))
    return ids


class RayFleet:
    """Worker actors on a Ray cluster (``address`` None: a local Ray), ``replicas``
    to start with.

    ``gpus``: ``auto`` puts each actor on a GPU of its own when the cluster
    has GPUs and the backend is not the simulated one; ``yes`` always,
    ``no`` never. CPU actors ask for ``cpus_per_actor`` logical CPUs.
    Actor ``i`` runs worker ``{prefix}-{i}``; a new actor takes the smallest
    index free, so worker ids stay few however often the fleet resizes.
    """

    def __init__(
        self,
        spec: FleetSpec,
        replicas: int,
        *,
        address: str | None = None,
        gpus: str = "auto",
        cpus_per_actor: float = 0.25,
        local_cpus: int | None = None,
    ) -> None:
        if replicas < 1:
            raise WorkerConfigError(f"replicas is {replicas}; it must be >= 1")
        if gpus not in ("auto", "yes", "no"):
            raise WorkerConfigError(f"gpus is {gpus!r}; it must be auto, yes or no")
        self.spec = spec
        self.initial_replicas = replicas
        self.address = address
        self.gpus = gpus
        self.cpus_per_actor = cpus_per_actor
        self.local_cpus = local_cpus
        self.members: dict[int, Any] = {}  # index -> actor, serving
        self.draining: dict[int, tuple[Any, Any]] = {}  # index -> (actor, drain's result ref)
        self.on_gpu = False
        self._started_ray = False
        self._resources: dict[str, Any] = {}

    @property
    def actors(self) -> list[Any]:
        """The serving actors, by index (draining ones not included)."""
        return [self.members[i] for i in sorted(self.members)]

    @property
    def replicas(self) -> int:
        """Actors serving (draining ones not counted); before start, the replicas asked for."""
        return len(self.members) if self._resources else self.initial_replicas

    def start(self) -> None:
        ray = _ray()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=self.local_cpus or max(2, os.cpu_count() or 2),
                    include_dashboard=False,
                    log_to_driver=False,
                )
            self._started_ray = True
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        if self.gpus == "yes":
            self.on_gpu = True
        elif self.gpus == "auto":
            self.on_gpu = cluster_gpus > 0 and self.spec.backend != "simulated"
        self._resources = (
            {"num_gpus": 1, "num_cpus": 1} if self.on_gpu else {"num_cpus": self.cpus_per_actor}
        )
        for _ in range(self.initial_replicas):
            self.add_replica()

    def add_replica(self) -> int:
        """Start one more actor (it connects by itself); returns its index."""
        if not self._resources:
            raise WorkerConfigError("the fleet is not started")
        ray = _ray()
        taken = self.members.keys() | self.draining.keys()
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        remote = ray.remote(WorkerActor)
        self.members[index] = remote.options(
            max_restarts=-1, max_task_retries=-1, **self._resources
        ).remote(self.spec, index)
        return index

    def headroom(self) -> int:
        """How many more actors Ray can place now: free GPUs for GPU actors,
        free CPUs over ``cpus_per_actor`` for CPU actors."""
        free = _ray().available_resources()
        if self.on_gpu:
            return int(min(free.get("GPU", 0.0), free.get("CPU", 0.0)) + 1e-9)
        return int(free.get("CPU", 0.0) / self.cpus_per_actor + 1e-9)

    def drain_replica(self, timeout_s: float = 600.0) -> int | None:
        """Drain the serving actor with the highest index (it takes nothing new,
        finishes its runs, then stops; :meth:`reap` ends it); returns its index,
        None when none serves."""
        if not self.members:
            return None
        index = max(self.members)
        actor = self.members.pop(index)
        self.draining[index] = (actor, actor.drain.remote(timeout_s))
        return index

    def reap(self, timeout_s: float = 0.0) -> list[tuple[int, dict[str, Any] | None]]:
        """End the actors whose drain is over (waiting up to ``timeout_s`` for
        one): each index with its final stats (None if the drain call failed)."""
        if not self.draining:
            return []
        ray = _ray()
        refs = {ref: index for index, (_, ref) in self.draining.items()}
        done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        ended: list[tuple[int, dict[str, Any] | None]] = []
        for ref in done:
            index = refs[ref]
            actor, _ = self.draining.pop(index)
            result: dict[str, Any] | None = None
            try:
                result = ray.get(ref)
            except Exception as exc:
                log.warning("draining worker %s failed: %s", self.spec.worker_id(index), exc)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            ended.append((index, result))
        return ended

    def wait_ready(self, timeout_s: float = 60.0) -> int:
        """How many serving actors have an open Lease stream within ``timeout_s``."""
        ray = _ray()
        refs = [actor.ready.remote(timeout_s) for actor in self.actors]
        return sum(1 for ok in ray.get(refs, timeout=timeout_s + 30.0) if ok)

    def stats(self, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The serving actors' stats, by index."""
        ray = _ray()
        return list(ray.get([a.stats.remote() for a in self.actors], timeout=timeout_s))

    def kill(self, index: int) -> None:
        """Kill actor ``index``'s process the hard way (Ray restarts it)."""
        ray = _ray()
        ray.kill(self.members[index], no_restart=False)

    def stop(self) -> None:
        ray = _ray()
        serving = self.actors
        with contextlib.suppress(Exception):
            ray.get([a.shutdown.remote() for a in serving], timeout=15.0)
        # A draining actor's drain call holds it; its runs end with its process
        # (the server puts them back in the queue).
        for actor in [*serving, *(a for a, _ in self.draining.values())]:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.members = {}
        self.draining = {}
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
