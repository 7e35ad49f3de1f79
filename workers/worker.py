"""The lease loop: one worker process's life on its Lease stream.

::

    worker = Worker(config, backend, connect, clock=MonotonicClock(), probe=probe)
    await worker.run()          # until stop(); reconnects by itself

On each stream, in order: say hello with ``capacity`` credits (the most
requests it runs at once: its window as this worker sees it; the server's
window controller grants at most that, usually fewer); then, concurrently,

* run every granted request on the backend as its own task, sending its
  output as chunks numbered from the grant's ``next_chunk`` (the server
  stores each index once, so a resend never duplicates and a resumed
  request continues its client's stream without a gap), a first-token
  mark with the first chunk, and at the end a completion with the real
  usage of the whole request, plus a credit back;
* obey stop orders: cancel the backend's work, then answer a preemption
  with ``stopped`` and the output tokens made so far (the request resumes
  elsewhere from what is stored); a cancel needs no answer. A report the
  server rejects for a fenced lease stops that run the same way;
* every ``feedback_interval_s``, send feedback: the GPU probe's latest
  readings, the engine's own signals and the latencies measured on the
  streams it served (:func:`workers.feedback.build_feedback`); GPU memory
  only where the engine reports no KV-cache use (engines that reserve their
  cache up front read ~90% on NVML whatever their load). This is also the
  heartbeat that keeps the leases alive.

:meth:`Worker.drain` readies it to leave without losing work: the next
message says ``draining`` (the server grants this worker nothing more, its
window is 0), no credit goes out any more, and the runs it holds go on to
their completions; a stream opened while draining opens with no credit and
says so at once. A grant the server sent before it read the drain still
comes; it runs like any other. (:mod:`workers.drain` tells when the last
lease is over.)

When the stream breaks, the runs go on (``keep_runs``, the default): the
hello says ``keeps_leases``, so the server holds the stream's leases for
its ``lease_s`` after the break. What the runs make meanwhile waits in the
outbox, and the worker reconnects with exponential backoff and jitter. The
new hello names every lease it still runs, still has to report, or whose
completion the server has not settled yet (``held``), and gives only the
credits of its free slots; the outbox is filled again with everything
those runs reported but their credits (every chunk since the grant, then
the ending), since whatever went out just before the break may have been
lost: the server stores the chunk indexes it lacks, in order, drops the
others, answers a completion it had already stored with ``settled`` again,
and answers a cancel stop for a lease it no longer holds (the run stops
like any cancelled one). A completion lost that way would otherwise have
its request run again once the server released the lease. A stopped or
failed ending gets no answer and is not named once sent: lost, its lease
is released as if the worker had gone (at the take-over, or lease_s after
the break), so the request is queued again, a preempted one to resume from
its stored output, a failed one to run again. Runs still
kept when lease_s has passed since the break are abandoned right then, in
the middle of a backoff or of a connect that hangs (which is given up): the
server has put those requests back in the queue, and another worker may run
them; the next hello names none of them. With
``keep_runs`` False, or when the stream ended because :meth:`Worker.stop`
was called, every run is abandoned at the break; a stopping worker tells
the server it is ``leaving`` first, so its leases go back to the queue at
once rather than after the grace.

All items go out through one :class:`~workers.outbox.Outbox`, so many
streams' chunks share a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from scheduler.clock import Clock
from tidegate.client import (
    HeldLease,
    LeaseFeedback,
    LeaseGrant,
    LeaseOpened,
    LeaseOrder,
    LeaseRejected,
    LeaseSettled,
    LeaseStop,
    Retry,
    WorkerHello,
    WorkerReport,
)
from tidegate.errors import TidegateError
from workers.backends.base import Backend
from workers.errors import WorkerConfigError
from workers.feedback import LatencyTracker, build_feedback
from workers.outbox import Outbox
from workers.probe import GpuProbe, GpuReading
from workers.runs import Run, RunContext, WorkerStats
from workers.tracing import RunTracer, default_run_tracer

__all__ = ["LeaseConnector", "LeaseLink", "Worker", "WorkerConfig", "WorkerStats"]

log = logging.getLogger("tidegate.worker")

_EMPTY: Mapping[str, str] = MappingProxyType({})


class LeaseLink(Protocol):
    """An open Lease stream (:class:`tidegate.client.LeaseStream` is the real one)."""

    @property
    def opened(self) -> LeaseOpened: ...

    async def send(self, report: WorkerReport) -> None: ...

    async def receive(self) -> LeaseOrder | None: ...

    async def close(self) -> None: ...


class LeaseConnector(Protocol):
    """Opens Lease streams (``InferenceClient.lease`` with a fleet key is the real one)."""

    async def __call__(self, hello: WorkerHello, *, credits: int) -> LeaseLink: ...


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """One worker. ``capacity``: requests it runs at once (the credits it gives).
    ``send_interval_s``: the least time between two Lease messages; what the
    runs make meanwhile waits and shares the next one (an idle stream sends at
    once; a busy one sends fewer, larger messages, each costing the worker and
    the server far less per chunk). ``default_max_tokens``: the output budget of
    a request that names none. ``keep_runs``: when the stream breaks, go on
    running and reconnect naming the leases (see the module docstring); False:
    abandon every run at a break."""

    worker_id: str
    capacity: int = 64
    feedback_interval_s: float = 0.5
    send_interval_s: float = 0.002
    lease_s: float = 0.0  # 0: the server's default
    default_max_tokens: int = 256
    keep_runs: bool = True  # across a break: the server holds the leases lease_s
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    reconnect: Retry = field(
        default_factory=lambda: Retry(initial_s=0.1, max_s=5.0, give_up_s=None)
    )

    def __post_init__(self) -> None:
        if self.capacity < 1:
            raise WorkerConfigError(f"worker capacity is {self.capacity}; it must be >= 1")
        if not self.feedback_interval_s > 0:
            raise WorkerConfigError(
                f"worker feedback_interval_s is {self.feedback_interval_s}; it must be > 0"
            )
        if not self.send_interval_s >= 0:
            raise WorkerConfigError(
                f"worker send_interval_s is {self.send_interval_s}; it must be >= 0"
            )
        if self.default_max_tokens < 1:
            raise WorkerConfigError(
                f"worker default_max_tokens is {self.default_max_tokens}; it must be >= 1"
            )


class Worker:
    """See the module docstring. ``probe``: the GPU's, or None where there is none."""

    def __init__(
        self,
        config: WorkerConfig,
        backend: Backend,
        connect: LeaseConnector,
        *,
        clock: Clock,
        probe: GpuProbe | None = None,
        rng: random.Random | None = None,
        tracer: RunTracer | None = None,
    ) -> None:
        """``tracer``: spans of its runs (default: OpenTelemetry's when this process
        set up a provider, else none)."""
        self.config = config
        self.backend = backend
        self._connect = connect
        self.clock = clock
        self.probe = probe
        self._rng = rng or random.Random()
        self.tracer = tracer if tracer is not None else default_run_tracer()
        self.stats = WorkerStats()
        self.tracker = LatencyTracker()
        self._runs: dict[str, Run] = {}
        self._tails: dict[str, Run] = {}  # ended runs whose ending no stream took yet
        self._stopping = asyncio.Event()
        self._draining = False
        self._box = Outbox()  # every stream's: runs outlive a break
        self._context: RunContext | None = None  # made on the first stream, then kept
        self._outbox: Outbox | None = None  # set while a stream is open
        self._broke_at: float | None = None  # runs kept since a break at this time
        self._grace_s = 0.0  # the last stream's lease_s: how long the server holds them
        self.connected = asyncio.Event()  # set while a stream is open (tests, readiness)

    def __repr__(self) -> str:
        return f"Worker({self.config.worker_id!r}, backend={self.backend.name!r})"

    def stop(self) -> None:
        """End :meth:`run` (the current stream is closed, runs are cancelled)."""
        self._stopping.set()

    def drain(self) -> None:
        """Take nothing new from now on (call it on the worker's loop): the server
        is told at once (``draining`` on the Lease stream, and on every stream
        opened after), no credit is sent any more, and what runs goes on. There
        is no way back: a drained worker is meant to stop once its runs end."""
        if self._draining:
            return
        self._draining = True
        if self._outbox is not None:
            self._outbox.wake.set()  # the sender says it now

    @property
    def draining(self) -> bool:
        return self._draining

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Serve until :meth:`stop`: connect, serve the stream, reconnect after a break."""
        await self.backend.start()
        backoff = self.config.reconnect.backoff(self._rng)
        try:
            while not self._stopping.is_set():
                await self._expire_kept()
                try:
                    link = await self._open()
                except TidegateError as exc:
                    delay = backoff.failed(self.clock.now())
                    log.warning("worker %s: cannot open a Lease stream: %s", self.name, exc)
                    if delay is None or await self._pause(delay):
                        return
                    continue
                if link is None:  # stop() came, or the kept runs' grace ended meanwhile
                    continue
                backoff.succeeded()
                error = await self._serve(link)
                if self._stopping.is_set():
                    return
                delay = backoff.failed(self.clock.now()) or 0.0
                log.warning(
                    "worker %s: Lease stream ended (%s); reconnecting in %.2f s",
                    self.name,
                    error or "closed by the server",
                    delay,
                )
                if await self._pause(delay):
                    return
        finally:
            await self._abandon_runs()  # stopped while away: what was kept goes too
            await self.backend.aclose()
            if self.probe is not None:
                self.probe.close()

    def _kept_until(self) -> float | None:
        """When the server stops holding the kept runs' leases (None: none kept)."""
        return None if self._broke_at is None else self._broke_at + self._grace_s

    async def _expire_kept(self) -> None:
        """Abandon kept runs once the server no longer holds their leases."""
        until = self._kept_until()
        if until is not None and self.clock.now() >= until:
            await self._abandon_kept()

    async def _abandon_kept(self) -> None:
        """The server no longer holds the kept runs' leases: stop them, report nothing."""
        log.warning(
            "worker %s: not back within %.3g s (lease_s) of the break: its %d runs are "
            "abandoned (the server has queued them again)",
            self.name,
            self._grace_s,
            len(self._runs),
        )
        await self._abandon_runs()

    @property
    def name(self) -> str:
        return self.config.worker_id

    async def _pause(self, seconds: float) -> bool:
        """The backoff's wait; True when stop() came meanwhile. Kept runs are
        abandoned when their grace ends during it, not at the next try: the
        server has put their requests back in the queue by then, and another
        worker may be running them."""
        end = self.clock.now() + seconds
        while True:
            until = self._kept_until()
            if until is None or until > end:
                return await self._wait_stop(max(0.0, end - self.clock.now()))
            if await self._wait_stop(max(0.0, until - self.clock.now())):
                return True
            await self._abandon_kept()

    async def _wait_stop(self, seconds: float) -> bool:
        """Sleep ``seconds`` on the clock; True when stop() came meanwhile."""
        sleep = asyncio.ensure_future(self.clock.sleep(seconds))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({sleep, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleep, stop):
                task.cancel()
        return self._stopping.is_set()

    async def _open(self) -> LeaseLink | None:
        """A new stream; None when stop() came or the kept runs' grace ended first."""
        config = self.config
        held = self._resume()
        hello = WorkerHello(
            worker_id=config.worker_id,
            capacity=config.capacity,
            backend=self.backend.name,
            labels=config.labels,
            lease_s=config.lease_s,
            held=held,
            keeps_leases=config.keep_runs,
        )
        # Kept runs hold their slots: only the free ones are credits.
        credits = 0 if self._draining else max(0, config.capacity - len(self._runs))
        return await self._connecting(self._connect(hello, credits=credits))

    async def _connecting(self, connect: Awaitable[LeaseLink]) -> LeaseLink | None:
        """``connect``, given up (None) when stop() comes or the kept runs' grace ends
        first: a server that does not answer must not keep the runs going past it
        (those requests run elsewhere by then). They are abandoned; the next hello
        names none of them."""
        task = asyncio.ensure_future(connect)
        stop = asyncio.ensure_future(self._stopping.wait())
        waits: set[asyncio.Future[Any]] = {task, stop}
        until = self._kept_until()
        timer = None
        if until is not None:
            timer = asyncio.ensure_future(self.clock.sleep(max(0.0, until - self.clock.now())))
            waits.add(timer)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                if not waiting.done():
                    waiting.cancel()
        expired = timer is not None and timer.done() and not timer.cancelled()
        (result,) = await asyncio.gather(task, return_exceptions=True)
        if expired:
            await self._abandon_kept()
        if isinstance(result, asyncio.CancelledError):
            return None
        if isinstance(result, BaseException):
            raise result
        if expired:
            # Opened in that very instant: too late, its hello named abandoned runs.
            with contextlib.suppress(Exception):
                await result.close()
            return None
        return result  # (stop() came too: the stream says leaving and ends at once)

    def _resume(self) -> tuple[HeldLease, ...]:
        """Before a hello (no await, so no credit can slip between this and the
        hello's count): the outbox holds again everything the kept runs reported
        but their credits, and the leases to name come back."""
        box = self._box
        box.clear()
        names: list[HeldLease] = []
        for run in (*self._runs.values(), *self._tails.values()):
            if run.held:
                run.resend(box)
                names.append(HeldLease(run.grant.request_id, run.grant.lease_id))
        return tuple(names)

    async def _serve(self, link: LeaseLink) -> BaseException | None:
        """One stream, until it ends, breaks or stop() is called; returns why it ended."""
        self.stats.connects += 1
        self.stats.connected = True
        self.connected.set()
        max_bytes = max(1, link.opened.max_chunk_bytes)
        outbox = self._box
        outbox.max_bytes = max_bytes
        self._outbox = outbox
        self._broke_at = None
        self._grace_s = link.opened.lease_s
        if self._draining or len(outbox):
            outbox.wake.set()  # a stream opened while draining says so first
        context = self._context
        if context is None:
            context = self._context = RunContext(
                backend=self.backend,
                outbox=outbox,
                tracker=self.tracker,
                clock=self.clock,
                stats=self.stats,
                max_chunk_bytes=max_bytes,
                default_max_tokens=self.config.default_max_tokens,
                worker_id=self.name,
                tracer=self.tracer,
            )
        context.max_chunk_bytes = max_bytes
        tasks = [
            asyncio.create_task(self._send(link, outbox), name=f"{self.name}:send"),
            asyncio.create_task(self._report(outbox), name=f"{self.name}:feedback"),
            asyncio.create_task(self._receive(link, context), name=f"{self.name}:receive"),
        ]
        stop = asyncio.ensure_future(self._stopping.wait())
        error: BaseException | None = None
        try:
            done, _ = await asyncio.wait({*tasks, stop}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and not task.cancelled():
                    error = task.exception() or error
        finally:
            stop.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.connected.clear()
            self.stats.connected = False
            self._outbox = None
            if self.config.keep_runs and not self._stopping.is_set():
                if self._runs or self._tails:
                    self._broke_at = self.clock.now()  # they go on; the next hello names them
            else:
                leases = bool(self._runs or self._tails)
                await self._abandon_runs()
                if self.config.keep_runs and leases:
                    await self._say_leaving(link)
            with contextlib.suppress(Exception):
                await link.close()
        return error

    async def _say_leaving(self, link: LeaseLink) -> None:
        """Tell the server its leases can go at once (best effort: else lease_s)."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.send(WorkerReport(leaving=True)), 1.0)

    async def _abandon_runs(self) -> None:
        """The leases are gone: stop every run, report nothing."""
        runs = list(self._runs.values())
        self._runs.clear()
        self._tails.clear()
        self._box.clear()
        self._broke_at = None
        for run in runs:
            run.abandon()
        await asyncio.gather(*(run.task for run in runs if run.task), return_exceptions=True)
        self.stats.running = 0

    async def _send(self, link: LeaseLink, outbox: Outbox) -> None:
        # On the loop's own clock, not the worker's: this is how messages are
        # packed, not a scheduling delay (a virtual clock must not hold them).
        loop = asyncio.get_running_loop()
        interval = self.config.send_interval_s
        sent_at = -interval
        said_draining = False  # on this stream
        while True:
            await outbox.wake.wait()
            wait = sent_at + interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # gather what else comes meanwhile
            report = outbox.take()
            if self._draining:
                if not said_draining:
                    report = report or WorkerReport()
                    said_draining = True
                    report = dataclasses.replace(report, draining=True, credits=0)
                elif report is not None and report.credits:
                    report = dataclasses.replace(report, credits=0)
            if report is not None:
                sent_at = loop.time()
                await link.send(report)  # a CallFailed ends the stream
                self.stats.reports += 1
                for ending in report.completions:  # named until settled
                    self._ending_sent(ending.request_id, ending.lease_id)
                for stopped in report.stopped:
                    self._ending_sent(stopped.request_id, stopped.lease_id)
                for failed in report.failed:
                    self._ending_sent(failed.request_id, failed.lease_id)

    def _ending_sent(self, request_id: str, lease_id: int) -> None:
        """A stream took this run's ending: unless it is a completion, which waits
        for the server's answer, nothing of it is sent again."""
        run = self._run_of(request_id, lease_id)
        if run is not None:
            run.ending_sent = True
            if not run.held:
                self._drop_tail(request_id, lease_id)

    def _settled(self, request_id: str, lease_id: int) -> None:
        """The server stored this run's completion: nothing of it is named again."""
        run = self._run_of(request_id, lease_id)
        if run is not None:
            run.settled = True
        self._drop_tail(request_id, lease_id)

    def _run_of(self, request_id: str, lease_id: int) -> Run | None:
        run = self._runs.get(request_id) or self._tails.get(request_id)
        return run if run is not None and run.grant.lease_id == lease_id else None

    def _drop_tail(self, request_id: str, lease_id: int) -> None:
        tail = self._tails.get(request_id)
        if tail is not None and tail.grant.lease_id == lease_id:
            del self._tails[request_id]

    async def _report(self, outbox: Outbox) -> None:
        """Feedback (and so a heartbeat) every interval."""
        interval = self.config.feedback_interval_s
        while True:
            await self.clock.sleep(interval)
            outbox.feedback(await self.feedback())
            self.stats.feedback_sent += 1

    async def feedback(self) -> LeaseFeedback:
        """What this worker can tell of its load now."""
        now = self.clock.now()
        readings: tuple[GpuReading, ...] = ()
        if self.probe is not None:
            try:
                readings = self.probe.read(now)
            except Exception as exc:  # stale beats none; the probe logs its own
                log.debug("worker %s: probe read failed: %s", self.name, exc)
        try:
            signals = await self.backend.signals()
        except Exception as exc:
            log.debug("worker %s: engine signals failed: %s", self.name, exc)
            signals = None
        fb = build_feedback(readings, signals, self.tracker.summary(now))
        gpu_mem = fb.gpu_mem
        if fb.kv_usage is not None:
            # An engine that reports its KV cache (vLLM, the simulated one)
            # reserves GPU memory up front, so NVML reads ~0.9 however loaded it
            # is: the KV figure is the memory signal, the NVML one would only
            # hold the window down.
            gpu_mem = None
        return LeaseFeedback(
            ttft_s=fb.ttft_s,
            tpot_s=fb.tpot_s,
            queue_depth=fb.queue_depth,
            kv_usage=fb.kv_usage,
            gpu_util=fb.gpu_util,
            gpu_mem=gpu_mem,
        )

    async def _receive(self, link: LeaseLink, context: RunContext) -> None:
        while (order := await link.receive()) is not None:
            if isinstance(order, LeaseGrant):
                self._start(order, context)
            elif isinstance(order, LeaseStop):
                run = self._runs.get(order.request_id)
                if run is not None and run.grant.lease_id == order.lease_id:
                    run.stop(order.kind)
                if order.kind != "preempt":  # a preempt order is answered by the ending
                    self._drop_tail(order.request_id, order.lease_id)  # nothing more to say
            elif isinstance(order, LeaseRejected):
                run = self._runs.get(order.request_id)
                if run is not None and run.grant.lease_id == order.lease_id:
                    log.info("worker %s: %s fenced off: %s", self.name, run, order.message)
                    run.stop("fenced")
                else:
                    log.debug("worker %s: rejected: %s", self.name, order)
                self._drop_tail(order.request_id, order.lease_id)
            elif isinstance(order, LeaseSettled):
                self._settled(order.request_id, order.lease_id)

    def _start(self, grant: LeaseGrant, context: RunContext) -> None:
        old = self._runs.get(grant.request_id)
        if old is not None:
            old.abandon()  # a re-grant supersedes whatever ran before under an old lease
        self._tails.pop(grant.request_id, None)
        self.stats.granted += 1
        run = Run(grant, context)
        self._runs[grant.request_id] = run
        self.stats.running = len(self._runs)

        def ended(_: asyncio.Task[None]) -> None:
            if self._runs.get(grant.request_id) is run:
                del self._runs[grant.request_id]
                if run.held:  # its ending has not gone out on a stream yet
                    self._tails[grant.request_id] = run
            self.stats.running = len(self._runs)

        run.start().add_done_callback(ended)
