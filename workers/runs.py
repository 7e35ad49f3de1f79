"""One granted request running on a worker's backend, from grant to its last report.

A :class:`Run` drains the backend's stream and turns it into reports:
chunks numbered from the grant's ``next_chunk`` (split where one is larger
than the server takes), a first-token mark with its first chunk, and one
ending with a credit back:

==================  ==================================================
how it ended        what the server hears
==================  ==================================================
finished            completion: real usage of the whole request
stop: preempt       stopped: output tokens made over all runs
stop: cancel        nothing but the credit (the server ended it)
fenced (rejected)   nothing but the credit (the lease is gone)
backend refused it  failed, not retryable (the request itself is bad)
backend broke       failed, retryable (another worker may try)
abandoned           nothing at all: the stream is gone, and its credits
==================  ==================================================

Output tokens of a preempted run count what was sent, so the resumed run
continues exactly after the stored text.

A run keeps every chunk it made and its ending report (``log``,
``ending``): when the stream breaks and the worker reconnects naming the
lease, :meth:`Run.resend` puts them in the new stream's outbox again (the
server stores the indexes it lacks and drops the rest), since no chunk is
acknowledged and any sent before the break may have been lost on the way.
A completion is acknowledged (``settled``): until then the run is named
after a break, its completion sent again (a completion lost on the way
would have its request run again once the server released the lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Literal, TypeAlias

from scheduler.clock import Clock
from tidegate.client import (
    Completion,
    Failed,
    FirstToken,
    LeaseGrant,
    OutputChunk,
    Stopped,
)
from workers.backends.base import Backend, Chunk, Finished, GenerationRequest
from workers.errors import BackendError, BackendRejectedError
from workers.feedback import LatencyTracker
from workers.grants import GrantError, plan_run
from workers.outbox import Outbox
from workers.tracing import NO_TRACING, RunSpan, RunTracer

__all__ = ["Run", "RunContext", "StopCause", "WorkerStats", "split_bytes"]

log = logging.getLogger("tidegate.worker")

StopCause: TypeAlias = Literal["preempt", "cancel", "fenced"]


@dataclass(slots=True)
class WorkerStats:
    """A worker's counters since it started (for logs, tests and the fleet's status)."""

    connects: int = 0
    granted: int = 0
    completed: int = 0
    preempted: int = 0
    cancelled: int = 0
    failed: int = 0
    fenced: int = 0
    chunks: int = 0
    reports: int = 0  # Lease messages sent (many chunks share one)
    feedback_sent: int = 0
    running: int = 0
    connected: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class RunContext:
    """What every run of one worker shares (across its streams: a run may outlive
    the stream it was granted on; ``max_chunk_bytes`` is the current stream's)."""

    backend: Backend
    outbox: Outbox
    tracker: LatencyTracker
    clock: Clock
    stats: WorkerStats
    max_chunk_bytes: int
    default_max_tokens: int
    worker_id: str
    tracer: RunTracer = NO_TRACING  # a span per run, under the server's dispatch span

    def bump(self, counter: str, by: int = 1) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + by)


def split_bytes(data: bytes, limit: int) -> list[bytes]:
    """``data`` in pieces of at most ``limit`` bytes (one piece when it fits)."""
    if len(data) <= limit:
        return [data]
    return [data[at : at + limit] for at in range(0, len(data), limit)]


class Run:
    """See the module docstring."""

    def __init__(self, grant: LeaseGrant, context: RunContext) -> None:
        self.grant = grant
        self.context = context
        self.cause: StopCause | None = None
        self.abandoned = False
        self.task: asyncio.Task[None] | None = None
        self._canceller: asyncio.Task[None] | None = None
        self.next_index = grant.next_chunk
        self.sent_tokens = 0
        self.resumed = 0  # output tokens of earlier runs, as this run was told
        self._span: RunSpan | None = None
        self._outcome = ""  # how it ended, for its span
        self._error = ""
        self.log: list[OutputChunk] = []  # every chunk it made, for a resend after a break
        self.ending: Completion | Stopped | Failed | None = None  # its last report
        self.ending_sent = False  # a stream took the report of its ending
        self.settled = False  # the server stored its completion (or is done with its lease)

    @property
    def held(self) -> bool:
        """Whether the server should still count this lease as the worker's: it runs
        (not cancelled or fenced), its ending was not sent yet, or it is a
        completion the server has not settled (it may have been lost with the
        stream; stopped and failed endings get no answer)."""
        if self.abandoned or self.settled or self.cause in ("cancel", "fenced"):
            return False
        if self.task is None or not self.task.done() or not self.ending_sent:
            return True
        return isinstance(self.ending, Completion)

    def resend(self, outbox: Outbox) -> None:
        """Everything it reported but the credit, again, in order (after a reconnect)."""
        for chunk in self.log:
            outbox.chunk(chunk)
        ending = self.ending
        if isinstance(ending, Completion):
            outbox.completion(ending)
        elif isinstance(ending, Stopped):
            outbox.stopped(ending)
        elif isinstance(ending, Failed):
            outbox.failed(ending)

    def __repr__(self) -> str:
        g = self.grant
        return f"Run({g.request_id}, lease={g.lease_id:#x}, attempt={g.attempt})"

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._main(), name=f"run:{self.grant.request_id}")
        return self.task

    def stop(self, cause: StopCause) -> None:
        """Stop the backend's work; the run then reports as ``cause`` says."""
        if self.cause is not None or self.abandoned:
            return
        self.cause = cause
        self._canceller = asyncio.create_task(
            self._cancel_backend(), name=f"cancel:{self.grant.request_id}"
        )

    async def _cancel_backend(self) -> None:
        try:
            await self.context.backend.cancel(self.grant.request_id)
        except Exception as exc:  # the run's own stream still ends it
            log.warning("%s: backend cancel failed: %s", self, exc)
            if self.task is not None:
                self.task.cancel()

    def abandon(self) -> None:
        """The stream is gone: stop at once and report nothing."""
        self.abandoned = True
        if self.task is not None:
            self.task.cancel()

    # ------------------------------------------------------------ running

    async def _main(self) -> None:
        span = self._span = self.context.tracer.start(self.grant, self.context.worker_id)
        try:
            await self._run()
        finally:
            span.end(self._outcome or ("abandoned" if self.abandoned else "ended"), self._error)

    async def _run(self) -> None:
        grant, ctx = self.grant, self.context
        try:
            plan = plan_run(grant, ctx.default_max_tokens)
        except GrantError as exc:
            self._failed(str(exc), retryable=False)
            return
        self.resumed = plan.resume_tokens
        if plan.request is None:  # earlier runs made all of it
            self._complete(plan.input_tokens, plan.resume_tokens, "length")
            return
        ctx.tracker.started(grant.request_id, ctx.clock.now())
        finished: Finished | None = None
        try:
            finished = await self._drain(plan.request)
        except asyncio.CancelledError:
            if not self.abandoned:
                raise
            return
        except BackendRejectedError as exc:
            self._failed(f"the backend refused it: {exc}", retryable=False)
            return
        except BackendError as exc:
            self._failed(f"the backend failed: {exc}", retryable=True)
            return
        except Exception as exc:  # a bug: let another worker try, say why here
            log.exception("%s failed", self)
            self._failed(f"worker error: {type(exc).__name__}: {exc}", retryable=True)
            return
        finally:
            ctx.tracker.finished(grant.request_id)
        if self.abandoned:
            return
        self._end(finished)

    async def _drain(self, request: GenerationRequest) -> Finished | None:
        stream = self.context.backend.generate(request)
        finished: Finished | None = None
        # A backend's stream that takes a sink (RequestStreams' do) hands it the
        # chunks as they are made, without waking this task for each one.
        asend = getattr(stream, "asend", None)
        try:
            if asend is None:
                async for event in stream:
                    if isinstance(event, Chunk):
                        self._chunk(event)
                    else:
                        finished = event
            else:
                sink = self._chunk
                event = await anext(stream)
                while True:
                    if isinstance(event, Chunk):
                        self._chunk(event)
                    else:
                        finished = event
                    event = await asend(sink)
        except StopAsyncIteration:
            pass
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        return finished

    def _chunk(self, chunk: Chunk) -> None:
        # Runs once per chunk of every stream on the worker: kept lean. It may be
        # called by the backend's producer itself (see _drain), so it checks that
        # the run still stands.
        if self.abandoned or (self.cause is not None and self.cause != "preempt"):
            return  # gone, cancelled or fenced: the server would refuse it
        grant, ctx = self.grant, self.context
        tokens = chunk.tokens
        self.sent_tokens += tokens
        if tokens > 0:
            ctx.tracker.chunk(grant.request_id, tokens, ctx.clock.now())
        if not chunk.text:
            return
        index = self.next_index
        data = chunk.text.encode("utf-8")
        outbox = ctx.outbox
        if len(data) <= ctx.max_chunk_bytes:
            item = OutputChunk(grant.request_id, grant.lease_id, index, data, tokens)
            self.log.append(item)
            outbox.chunk(item)
            self.next_index = index + 1
            ctx.stats.chunks += 1
        else:
            pieces = split_bytes(data, ctx.max_chunk_bytes)
            for i, piece in enumerate(pieces):
                item = OutputChunk(
                    grant.request_id, grant.lease_id, index + i, piece, tokens if i == 0 else 0
                )
                self.log.append(item)
                outbox.chunk(item)
            self.next_index = index + len(pieces)
            ctx.stats.chunks += len(pieces)
        if index == grant.next_chunk:  # its first chunk
            outbox.first_token(FirstToken(grant.request_id, grant.lease_id))
            if self._span is not None:
                self._span.first_token()

    # ------------------------------------------------------------ endings

    def _end(self, finished: Finished | None) -> None:
        ctx = self.context
        if self.cause is not None:
            self._outcome = {"preempt": "preempted", "cancel": "cancelled"}.get(
                self.cause, self.cause
            )
        if self.cause == "preempt":
            done = self.resumed + self.sent_tokens
            stopped = self.ending = Stopped(self.grant.request_id, self.grant.lease_id, done)
            ctx.outbox.stopped(stopped)
            ctx.outbox.credit()
            ctx.bump("preempted")
        elif self.cause == "cancel":
            ctx.outbox.credit()
            ctx.bump("cancelled")
        elif self.cause == "fenced":
            ctx.outbox.credit()
            ctx.bump("fenced")
        elif finished is None:
            self._failed("the backend's stream ended without a finish", retryable=True)
        elif finished.reason == "cancelled":
            self._failed("the backend stopped it on its own", retryable=True)
        else:
            self._complete(finished.input_tokens, finished.total_output_tokens, finished.reason)

    def _complete(self, input_tokens: int, output_tokens: int, reason: str) -> None:
        ctx, grant = self.context, self.grant
        completion = self.ending = Completion(
            grant.request_id, grant.lease_id, input_tokens, output_tokens, reason
        )
        ctx.outbox.completion(completion)
        ctx.outbox.credit()
        ctx.bump("completed")
        self._outcome = "completed"

    def _failed(self, message: str, *, retryable: bool) -> None:
        ctx, grant = self.context, self.grant
        if self.abandoned:
            return
        if self.cause is not None:  # stopped meanwhile: the stop's answer stands
            self._end(None)
            return
        log.warning("worker %s: %s failed: %s", ctx.worker_id, self, message)
        self._outcome, self._error = "failed", message
        failed = self.ending = Failed(grant.request_id, grant.lease_id, message, retryable)
        ctx.outbox.failed(failed)
        ctx.outbox.credit()
        ctx.bump("failed")
