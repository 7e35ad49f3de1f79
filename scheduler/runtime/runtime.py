"""The runtime: the scheduler's policy core served over a durable store, in asyncio.

Requests come in from clients (:meth:`Runtime.submit`), are admitted by the
policy, written down, and queued; workers attach (:meth:`Runtime.attach`),
give credits, and get grants chosen by the policy; their output is stored in
each request's reply lite-topic in order; the policy hears of first tokens,
completions, preemptions and lost workers as they happen. Time is the
``clock``'s (monotonic in the server, virtual in tests), wall time is only
written down. See :mod:`scheduler.runtime.core` for the shared moves,
:mod:`.leasing` for the workers' side and :mod:`.recovery` for restarts.

Submit, in order: validate; a known idempotency key answers with its
request's original answer (:mod:`.idempotency`; nothing is admitted);
admission by the policy (a refusal costs no write); the request is live and
may be dispatched at once, but its grant waits until its submit record is
durable, which is also when Submit answers. A failed write takes the request
back out of the policy (and forgets its key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from scheduler.clock import Clock
from scheduler.policy import Policy
from scheduler.runtime.checks import REQUEST_LITE_PREFIX, check_submit
from scheduler.runtime.core import Core
from scheduler.runtime.errors import (
    RefusedError,
    RequestNotFoundError,
    RoleDeniedError,
    ServingUnavailableError,
)
from scheduler.runtime.idempotency import Remembered, submitted_of
from scheduler.runtime.leasing import Leasing
from scheduler.runtime.live import COMPLETING, Live
from scheduler.runtime.observer import NO_OBSERVER, RequestObserver
from scheduler.runtime.records import SubmitRecord
from scheduler.runtime.recovery import restore
from scheduler.runtime.sessions import WorkerSession
from scheduler.runtime.store import Appended, RequestStore
from scheduler.runtime.values import (
    FleetView,
    Outgoing,
    RequestView,
    RuntimeOptions,
    RuntimeStats,
    State,
    StopOut,
    StopReason,
    SubmitSpec,
    Submitted,
    WorkerHello,
    WorkerInput,
)
from scheduler.types import Refusal, Request, SchedulerConfig

__all__ = ["Runtime"]

log = logging.getLogger("tidegate.scheduler")


class Runtime:
    """See the module docstring. Call :meth:`start` on the loop before anything else."""

    def __init__(
        self,
        policy: Policy,
        store: RequestStore,
        config: SchedulerConfig,
        *,
        clock: Clock,
        wall: Callable[[], float],
        options: RuntimeOptions | None = None,
        worker_tenants: frozenset[str] = frozenset(),
        observer: RequestObserver = NO_OBSERVER,
    ) -> None:
        self.core = Core(
            policy,
            store,
            config,
            clock=clock,
            wall=wall,
            options=options or RuntimeOptions(),
            worker_tenants=worker_tenants,
            observer=observer,
        )
        self.leasing = Leasing(self.core)
        self._ticker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Number this start, queue again what a previous run left, start ticking."""
        core = self.core
        core.epoch = await core.store.boot(int(core.wall()) & 0xFFFF_FFFF)
        core.writer.start()
        core.submits.start()
        await restore(core)
        self._ticker = asyncio.create_task(self._tick(), name="scheduler-ticker")
        core.kick()

    async def _tick(self) -> None:
        core = self.core
        while True:
            await core.clock.sleep(core.options.tick_s)
            try:
                core.tick()
            except Exception:
                log.exception("scheduler tick failed")

    async def drain(self) -> None:
        """Stopping: refuse new work and end every worker stream now."""
        core = self.core
        core.stopping = True
        error = ServingUnavailableError("the server is shutting down; reconnect to its successor")
        for session in list(core.sessions.values()):
            core.detach(session, error)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let the writes under way finish, then store the restart point."""
        core = self.core
        core.stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await core.submits.close()
        if core.tasks:
            await asyncio.wait(set(core.tasks), timeout=timeout_s)
        await core.writer.close()
        if not core.writer.failed:
            low = core.restart.point()
            if low > core.restart.committed:
                with contextlib.suppress(Exception):
                    await core.store.commit(low)
                    core.restart.committed = low

    # ------------------------------------------------------------- clients

    async def submit(
        self,
        tenant: str,
        spec: SubmitSpec,
        payload: bytes,
        rest: AsyncIterator[bytes] | None = None,
    ) -> Submitted:
        """Admit, write down and queue one request; ``rest``: more payload pieces."""
        core = self.core
        core.check_serving()
        if tenant in core.worker_tenants:
            raise RoleDeniedError(
                f"tenant {tenant!r} is a worker tenant: it leases, it does not submit"
            )
        checked = check_submit(spec, len(payload), core.options)
        key = spec.idempotency_key
        if key:
            again = await self._again(tenant, key)
            if again is not None:
                return again
        # From here to the key's entry nothing awaits: two sends of one key
        # cannot both get this far.
        request_id = core.new_request_id()
        lite = spec.session or f"{REQUEST_LITE_PREFIX}{request_id}"
        now = core.clock.now()
        wall = core.wall()
        configured = core.config.tenants.get(tenant)
        priority = spec.priority
        if configured is not None:
            priority = min(priority, configured.max_priority)  # capped, not refused
        deadline = now + spec.deadline_s if spec.deadline_s else None
        request = Request(
            request_id,
            tenant,
            priority,
            checked.input_tokens,
            checked.output_tokens,
            now,
            deadline,
            spec.session,
        )
        decision = core.policy.submit(request, now)
        if isinstance(decision, Refusal):
            core.counters["refused"] += 1
            core.observer.refused(request, decision, spec.properties)
            raise RefusedError(decision)
        record = SubmitRecord(
            request_id=request_id,
            tenant=tenant,
            priority=priority,
            input_tokens=checked.input_tokens,
            output_tokens=checked.output_tokens,
            session=spec.session,
            reply_topic=checked.reply_topic,
            reply_lite=lite,
            reply_from=0,
            deadline_wall=wall + spec.deadline_s if spec.deadline_s else None,
            admitted_at=wall,
            properties=spec.properties,
            idempotency_key=key,
        )
        options = core.options
        cache = None
        if (
            rest is None
            and len(payload) <= options.cache_payload_bytes
            and core.cache_bytes + len(payload) <= options.cache_total_bytes
        ):
            cache = payload
            core.cache_bytes += len(payload)
        live = Live(
            record,
            request,
            asyncio.get_running_loop().create_future(),
            payload=cache,
            payload_size=len(payload),
        )
        core.live[request_id] = live
        if key:
            core.keys.admit(tenant, key, request_id)
        core.counters["submitted"] += 1
        core.observer.admitted(request, spec.properties, core.clock.now())
        core.kick()
        floor = core.restart.open_floor()
        if rest is None:
            task = core.submits.append(record, payload)  # batched with others under way
        else:
            task = asyncio.ensure_future(core.store.append_submit(record, _chain(payload, rest)))
        task.add_done_callback(lambda done: self._stored(live, floor, done))
        appended = await asyncio.shield(task)  # a caller that goes away changes nothing
        return Submitted(request_id, checked.reply_topic, lite, appended.reply_from, priority, wall)

    async def _again(self, tenant: str, key: str) -> Submitted | None:
        """The answer of the request ``key`` names for ``tenant`` (once its submit is
        stored), or None without awaiting anything: the key is free."""
        core = self.core
        found = core.keys.find(tenant, key, core.wall())
        if found is None:
            return None
        core.counters["duplicates"] += 1
        if isinstance(found, Remembered):
            return found.answer
        live = core.live[found]  # a live key's request is live: forget() drops both
        stored = live.stored
        if not stored.done():
            await asyncio.wait([stored])  # never cancels it, never raises its error
        if stored.cancelled() or stored.exception() is not None:
            raise ServingUnavailableError(
                f"the submit that first carried idempotency_key {key!r} could not be stored; "
                "send it again"
            )
        return submitted_of(live.record, duplicate=True)

    def _stored(self, live: Live, floor: int, task: asyncio.Future[Appended]) -> None:
        core = self.core
        if live.stored.done():  # cannot happen: only this callback settles it
            return
        error = None if task.cancelled() else task.exception()
        if task.cancelled() or error is not None:
            core.restart.close_floor(floor, None)
            live.stored.set_exception(error or asyncio.CancelledError())
            live.stored.exception()  # retrieved: nobody else may look
            if live.finishing is None:
                with contextlib.suppress(Exception):
                    core.policy.cancel(live.request_id, core.clock.now())
                core.forget(live, State.FAILED, f"its submit was not stored: {error}", None)
                core.kick()
            return
        appended = task.result()
        core.restart.close_floor(floor, appended.offset)
        live.offset = appended.offset
        live.record = replace(live.record, reply_from=appended.reply_from)
        live.stored.set_result(None)
        core.observer.stored(live.request_id, core.clock.now())

    def _owned(self, tenant: str, request_id: str) -> Live | RequestView:
        core = self.core
        live = core.live.get(request_id)
        if live is not None and live.record.tenant == tenant:
            return live
        view = core.finished.get(request_id)
        if view is not None and view.tenant == tenant:
            return view
        raise RequestNotFoundError(
            f"request {request_id!r} is not known for tenant {tenant!r} (never submitted, "
            "another tenant's, or finished long enough ago to be forgotten)"
        )

    def status(self, tenant: str, request_id: str) -> RequestView:
        found = self._owned(tenant, request_id)
        return found.view() if isinstance(found, Live) else found

    async def cancel(self, tenant: str, request_id: str) -> tuple[bool, RequestView]:
        """Stop a request wherever it is; (False, its final view) if it already ended."""
        core = self.core
        found = self._owned(tenant, request_id)
        if not isinstance(found, Live):
            return False, found
        live = found
        if live.finishing is not None:
            return False, await asyncio.shield(live.finishing)
        core.check_serving()
        core.policy.cancel(request_id, core.clock.now())
        lease = live.lease
        if lease is not None and lease.sent and lease.state != COMPLETING:
            lease.session.push(StopOut(request_id, lease.lease_id, StopReason.CANCEL))
        view = await asyncio.shield(core.finish(live, State.CANCELLED, "cancelled by the client"))
        core.kick()
        return True, view

    # ------------------------------------------------------------- workers

    def attach(self, tenant: str, hello: WorkerHello) -> WorkerSession:
        return self.leasing.attach(tenant, hello)

    def receive(self, session: WorkerSession, message: WorkerInput) -> None:
        self.leasing.receive(session, message)

    async def outgoing(self, session: WorkerSession) -> Outgoing | None:
        """The next thing to send on ``session``'s stream (None: the stream is over).

        A grant that could not be sent (its lease went while it was being
        prepared) gives its credit back.
        """
        return await self.leasing.outgoing(session)

    def detach(self, session: WorkerSession, error: BaseException | None = None) -> None:
        """The stream ended (``error``: why, if the worker broke a rule)."""
        self.core.detach(session, error)

    def fleet_status(self, tenant: str) -> FleetView:
        """Queued and in-flight counts (all, per band, per tenant) for a fleet's
        autoscaler; only a worker tenant may ask."""
        core = self.core
        if tenant not in core.worker_tenants:
            raise RoleDeniedError(
                f"tenant {tenant!r} is not a worker tenant (role: worker): only a fleet's "
                "key may read the fleet status"
            )
        stats = core.policy.stats()
        bands = {
            band: (b.queued, b.in_flight)
            for band, b in sorted(stats.bands.items(), reverse=True)
            if b.queued or b.in_flight
        }
        tenants = {
            name: (t.queued, t.in_flight)
            for name, t in sorted(stats.tenants.items())
            if t.queued or t.in_flight
        }
        sessions = core.sessions.values()
        return FleetView(
            queued=stats.queued,
            in_flight=stats.in_flight,
            bands=bands,
            tenants=tenants,
            workers=len(core.sessions),
            draining_workers=sum(1 for s in sessions if s.draining),
        )

    # ------------------------------------------------------------- config, stats

    def update_config(
        self, config: SchedulerConfig, worker_tenants: frozenset[str] | None = None
    ) -> None:
        """Hot reload: new tenants, weights, quotas, windows; nothing queued is dropped."""
        core = self.core
        core.policy.update_config(config, core.clock.now())
        core.config = config
        if worker_tenants is not None:
            core.worker_tenants = worker_tenants
        core.kick()

    def stats(self) -> RuntimeStats:
        core = self.core
        return RuntimeStats(
            policy=core.policy.stats(),
            workers=len(core.sessions),
            live_requests=len(core.live),
            pending_writes=core.writer.pending,
            counters=dict(core.counters),
        )

    @property
    def epoch(self) -> int:
        return self.core.epoch


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for piece in rest:
        yield piece
