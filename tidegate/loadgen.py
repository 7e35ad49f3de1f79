"""``tidegate loadgen``: replay a trace against a running server, measured on the wall clock.

Each trace row is submitted at its arrival time (divided by ``speed``) with
its tenant's API key, priority, token counts and session; its reply is read
from its lite-topic as it streams. One :class:`LoadEvent` per row comes
back, with the columns of the simulator's events file (CONTRACTS.md
section 3), so the two compare column for column:

* times are seconds from the replay's start, multiplied by ``speed`` (so
  ``arrival_s`` is the trace's own);
* ``dispatch_s``: when the request was first seen leased to a worker. The
  server does not push that moment, so the oldest queued requests of each
  tenant and priority are polled with Status every ``poll_interval_s``
  (inside a tenant and priority the scheduler is FIFO, so only the head of
  each such queue can be next), and the first chunk bounds it from above;
* ``first_token_s``: when the first chunk arrived here; ``finish_s``: when
  the end mark of a completed request arrived;
* ``admitted`` 0 with the server's refusal reason; a request admitted and
  then dropped at its deadline keeps ``admitted`` 1 with reason
  ``deadline`` (as the simulator writes it);
* ``input_tokens``/``output_tokens``: the real usage of a completed request
  (the trace's otherwise); ``worker``: the last worker seen running it;
  ``preemptions``: its leases beyond the first.

:meth:`LoadGenerator.live` gives running per-tenant figures (the demo's
table). Reading a trace file and writing the events file are the command
line's job (:mod:`tidegate.cli`), which owns the formats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tidegate.errors import CallFailed, UsageError
from tidegate.inference import InferenceClient
from tidegate.inference_values import (
    Refused,
    ReplyChunk,
    ReplyEnd,
    RequestState,
    SubmitOptions,
    Submitted,
)
from tidegate.options import ApiKey, Retry, Tls

__all__ = ["LoadEvent", "LoadGenerator", "LoadOptions", "LoadRow", "TenantLive"]

log = logging.getLogger("tidegate.loadgen")

DEADLINE = "deadline"  # the simulator's reason for a request dropped at its deadline


@dataclass(frozen=True, slots=True)
class LoadRow:
    """One trace row (CONTRACTS.md section 3)."""

    arrival_s: float
    tenant: str
    priority: int
    input_tokens: int
    output_tokens: int
    session: str = ""


@dataclass(frozen=True, slots=True)
class LoadEvent:
    """One events row (the columns of the simulator's events file)."""

    request_id: str
    tenant: str
    priority: int
    arrival_s: float
    admitted: bool
    reject_reason: str
    dispatch_s: float | None
    first_token_s: float | None
    finish_s: float | None
    input_tokens: int
    output_tokens: int
    worker: str
    preemptions: int


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """``speed``: arrival times are divided by it. ``drain_s``: after the last
    arrival, how long to wait for requests still running before giving up on
    them (their rows keep what was seen)."""

    speed: float = 1.0
    poll_interval_s: float = 0.05
    drain_s: float = 600.0
    payload_bytes: int = 64
    deadline_s: float = 0.0  # SubmitOptions.deadline_s of every request (0: none)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise UsageError(f"--speed {self.speed}: it must be > 0")
        if not self.poll_interval_s > 0:
            raise UsageError(f"poll_interval_s {self.poll_interval_s}: it must be > 0")


@dataclass(slots=True)
class TenantLive:
    """Running figures of one tenant (trace seconds)."""

    submitted: int = 0
    admitted: int = 0
    refused: int = 0
    queued: int = 0  # admitted, not yet seen dispatched, not ended
    running: int = 0
    completed: int = 0
    served_tokens: int = 0  # input + output of completed requests
    waits: list[float] = field(default_factory=list)
    served: list[tuple[float, int]] = field(default_factory=list)  # (finish, tokens)
    dispatched: list[tuple[float, int]] = field(default_factory=list)  # (dispatch, tokens)


@dataclass(slots=True, eq=False)
class _Track:
    row: LoadRow
    request_id: str
    admitted: bool = False
    reason: str = ""
    submitted: Submitted | None = None
    dispatch_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    worker: str = ""
    attempts: int = 0
    ended: bool = False

    def event(self) -> LoadEvent:
        row = self.row
        return LoadEvent(
            request_id=self.request_id,
            tenant=row.tenant,
            priority=row.priority,
            arrival_s=row.arrival_s,
            admitted=self.admitted,
            reject_reason=self.reason,
            dispatch_s=self.dispatch_s,
            first_token_s=self.first_token_s,
            finish_s=self.finish_s,
            input_tokens=row.input_tokens if self.input_tokens is None else self.input_tokens,
            output_tokens=row.output_tokens if self.output_tokens is None else self.output_tokens,
            worker=self.worker,
            preemptions=max(0, self.attempts - 1),
        )


class LoadGenerator:
    """Replays ``rows`` against ``server``; ``keys``: each tenant's API key."""

    def __init__(
        self,
        server: str,
        rows: Sequence[LoadRow],
        keys: Mapping[str, str | ApiKey],
        options: LoadOptions | None = None,
        *,
        tls: Tls | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        missing = sorted({r.tenant for r in rows} - set(keys))
        if missing:
            raise UsageError(
                f"no API key for tenant(s) {', '.join(missing)} of the trace; see "
                "`tidegate loadgen --help` for where keys come from"
            )
        self.server = server
        self.rows = list(rows)
        self.options = options or LoadOptions()
        self._keys = dict(keys)
        self._tls = tls
        self._monotonic = monotonic
        self._t0: float | None = None
        width = len(str(len(self.rows)))
        self._tracks = [_Track(r, f"r{i + 1:0{width}d}") for i, r in enumerate(self.rows)]
        self.tenants: dict[str, TenantLive] = {t: TenantLive() for t in sorted(keys)}
        # Admitted and not yet seen dispatched, per (tenant, priority), in submit order.
        self._waiting: defaultdict[tuple[str, int], deque[_Track]] = defaultdict(deque)
        self._clients: dict[str, InferenceClient] = {}
        self._stopping = asyncio.Event()
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []

    # ------------------------------------------------------------ time

    def now(self) -> float:
        """Seconds since the replay started, on the trace's scale."""
        if self._t0 is None:
            return 0.0
        return (self._monotonic() - self._t0) * self.options.speed

    @property
    def done(self) -> int:
        return sum(1 for t in self._tracks if t.ended)

    @property
    def total(self) -> int:
        return len(self._tracks)

    # ------------------------------------------------------------ run

    def stop(self) -> None:
        """End the replay early: no more submits; :meth:`run` returns what was seen."""
        self._stopping.set()

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

    async def run(self) -> list[LoadEvent]:
        """Replay the whole trace; the rows come back in trace order."""
        retry = Retry(give_up_s=60.0)
        self._clients = {
            tenant: InferenceClient(self.server, api_key=key, tls=self._tls, retry=retry)
            for tenant, key in self._keys.items()
        }
        self._t0 = self._monotonic()
        poller = asyncio.create_task(self._poll(), name="loadgen-poll")
        tasks: list[asyncio.Task[None]] = []
        try:
            speed = self.options.speed
            for track in self._tracks:
                delay = track.row.arrival_s / speed - (self._monotonic() - self._t0)
                if self._stopping.is_set() or (delay > 0 and await self._stopped_within(delay)):
                    break
                tasks.append(asyncio.create_task(self._one(track)))
            if tasks and not self._stopping.is_set():
                stop = asyncio.create_task(self._stopping.wait())
                everything = asyncio.create_task(self._all(tasks))
                await asyncio.wait(
                    {everything, stop},
                    timeout=self.options.drain_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                stop.cancel()
                everything.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            poller.cancel()
            for side in list(self._side_tasks):
                side.cancel()
            await asyncio.gather(poller, *self._side_tasks, return_exceptions=True)
            for client in self._clients.values():
                with contextlib.suppress(Exception):
                    await client.close()
        return [t.event() for t in self._tracks]

    @staticmethod
    async def _all(tasks: list[asyncio.Task[None]]) -> bool:
        await asyncio.gather(*tasks, return_exceptions=True)
        return True

    async def _one(self, track: _Track) -> None:
        row = track.row
        live = self.tenants[row.tenant]
        client = self._clients[row.tenant]
        live.submitted += 1
        options = SubmitOptions(
            priority=row.priority,
            session=row.session,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            deadline_s=self.options.deadline_s,
        )
        payload = f"loadgen {track.request_id} ".encode().ljust(self.options.payload_bytes, b".")
        try:
            submitted = await client.submit(payload, options)
        except Refused as exc:
            track.reason = exc.reason
            track.ended = True
            live.refused += 1
            return
        except CallFailed as exc:
            track.reason = exc.code.lower()
            track.ended = True
            live.refused += 1
            self._error(f"{track.request_id}: {exc}")
            return
        track.admitted = True
        track.submitted = submitted
        live.admitted += 1
        live.queued += 1
        self._waiting[(row.tenant, submitted.priority)].append(track)
        try:
            await self._follow(track, client, submitted, live)
        finally:
            if track.dispatch_s is None:
                live.queued -= 1
            else:
                live.running -= 1
            track.ended = True

    async def _follow(
        self, track: _Track, client: InferenceClient, submitted: Submitted, live: TenantLive
    ) -> None:
        watch = await client.watch(submitted)
        async for event in watch:
            now = self.now()
            if isinstance(event, ReplyChunk):
                if track.first_token_s is None:
                    track.first_token_s = now
                    self._dispatched(track, now, "")
                    if not track.worker:  # while it runs, Status names its worker
                        learn = asyncio.create_task(self._learn_worker(track, client))
                        self._side_tasks.add(learn)
                        learn.add_done_callback(self._side_tasks.discard)
                continue
            self._ended(track, event, now, live)
        with contextlib.suppress(CallFailed):
            status = await client.status(submitted.request_id)
            track.attempts = max(track.attempts, status.attempts)
            track.worker = status.worker_id or track.worker

    async def _learn_worker(self, track: _Track, client: InferenceClient) -> None:
        if track.submitted is None:
            return
        with contextlib.suppress(CallFailed):
            status = await client.status(track.submitted.request_id)
            track.attempts = max(track.attempts, status.attempts)
            track.worker = status.worker_id or track.worker

    def _dispatched(self, track: _Track, now: float, worker: str) -> None:
        if worker:
            track.worker = worker
        if track.dispatch_s is not None:
            return
        track.dispatch_s = now if track.first_token_s is None else min(now, track.first_token_s)
        live = self.tenants[track.row.tenant]
        live.waits.append(track.dispatch_s - track.row.arrival_s)
        live.dispatched.append((track.dispatch_s, track.row.input_tokens + track.row.output_tokens))
        if not track.ended:  # an ended request's counters are settled already
            live.queued -= 1
            live.running += 1

    def _ended(self, track: _Track, end: ReplyEnd, now: float, live: TenantLive) -> None:
        if end.outcome == "completed":
            if track.dispatch_s is None:
                self._dispatched(track, now, "")
            track.finish_s = now
            track.input_tokens = end.input_tokens
            track.output_tokens = end.output_tokens
            live.completed += 1
            tokens = end.input_tokens + end.output_tokens
            live.served_tokens += tokens
            live.served.append((now, tokens))
        elif end.outcome == "dropped":
            track.reason = DEADLINE
        else:
            track.reason = end.outcome
        track.ended = True

    # ------------------------------------------------------------ dispatch polling

    async def _poll(self) -> None:
        interval = self.options.poll_interval_s / self.options.speed
        while True:
            await asyncio.sleep(interval)
            heads = [(key, queue) for key, queue in self._waiting.items() if queue]
            if heads:
                await asyncio.gather(*(self._poll_queue(q) for _, q in heads))

    async def _poll_queue(self, queue: deque[_Track], budget: int = 32) -> None:
        """Walk a queue from its head while its requests turn out dispatched."""
        while queue and budget > 0:
            track = queue[0]
            if track.dispatch_s is not None or track.ended or track.submitted is None:
                queue.popleft()
                continue
            budget -= 1
            client = self._clients[track.row.tenant]
            try:
                status = await client.status(track.submitted.request_id)
            except CallFailed as exc:
                self._error(f"status of {track.request_id}: {exc}")
                return
            if status.attempts == 0 and status.state is RequestState.QUEUED:
                return  # the head still waits: so does everything behind it
            track.attempts = max(track.attempts, status.attempts)
            self._dispatched(track, self.now(), status.worker_id)
            queue.popleft()

    def _error(self, text: str) -> None:
        if len(self.errors) < 100:
            self.errors.append(text)
        log.warning("loadgen: %s", text)

    # ------------------------------------------------------------ live view

    def live(self) -> Mapping[str, TenantLive]:
        return self.tenants
