"""The runtime's shared state and the moves every path needs.

:class:`Core` holds the policy, the store, the writer, the live requests and
the worker sessions, and does what clients' and workers' calls have in
common: pump the policy (dispatch to workers with credits, drop requests
past their deadline, order preemptions), end a request for good (its end
mark in the reply lite-topic, its final view in the finished journal and its
done record in one store write), release a worker's leases (or hold them
while a worker that keeps its runs across a break reconnects, see
:meth:`Core.detach`), move the restart point, and compact the finished
journal (:mod:`.finished`).

Everything here runs on the event loop; decisions are synchronous, writes
are queued on the :class:`Writer` and awaited by whoever needs them done.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from scheduler.clock import Clock
from scheduler.errors import SchedulerError
from scheduler.policy import Policy
from scheduler.runtime.errors import ServingError, ServingUnavailableError, WrongStateError
from scheduler.runtime.idempotency import IdempotencyKeys
from scheduler.runtime.live import ACTIVE, COMPLETING, GONE, STOPPING, Lease, Live
from scheduler.runtime.observer import NO_OBSERVER, RequestObserver, RequeueCause
from scheduler.runtime.records import DoneRecord, bounded_text, end_properties
from scheduler.runtime.restart_point import RestartPoint
from scheduler.runtime.sessions import PendingGrant, WorkerSession
from scheduler.runtime.store import DoneWrite, FinishedWrite, ReplyWrite, RequestStore, Write
from scheduler.runtime.submits import SubmitBatcher
from scheduler.runtime.values import RequestView, RuntimeOptions, State, StopOut, StopReason
from scheduler.runtime.writer import Writer
from scheduler.types import Dispatch, Dropped, Preempt, SchedulerConfig

__all__ = ["Core"]

log = logging.getLogger("tidegate.scheduler")

AfterStored = Callable[[], None]


@dataclass(frozen=True, slots=True)
class _Ending:
    outcome: str
    reason: str
    usage: tuple[int, int] | None
    finish_reason: str
    end_mark: bool
    view: RequestView | None  # the final view, if known already (see finish)


class Core:
    """See the module docstring."""

    def __init__(
        self,
        policy: Policy,
        store: RequestStore,
        config: SchedulerConfig,
        *,
        clock: Clock,
        wall: Callable[[], float],
        options: RuntimeOptions,
        worker_tenants: frozenset[str],
        observer: RequestObserver = NO_OBSERVER,
    ) -> None:
        self.policy = policy
        self.observer = observer  # metrics and traces of each request's moves
        self.store = store
        self.config = config
        self.clock = clock
        self.wall = wall
        self.options = options
        self.worker_tenants = worker_tenants
        self.writer = Writer(store)
        self.submits = SubmitBatcher(store)
        self.live: dict[str, Live] = {}
        self.finished: OrderedDict[str, RequestView] = OrderedDict()
        # request id -> the lease whose completion finished it, and that lease's
        # worker (tenant, worker id): see remember_completed
        self.completed_leases: OrderedDict[str, tuple[int, str, str]] = OrderedDict()
        self.keys = IdempotencyKeys(options.idempotency_ttl_s, options.idempotency_max_keys)
        self.sessions: dict[str, WorkerSession] = {}  # by policy worker key
        self.by_worker: dict[tuple[str, str], WorkerSession] = {}
        self.draining: dict[str, WorkerSession] = {}  # closed, completions still being stored
        self.held: dict[str, WorkerSession] = {}  # broken, leases kept for a reconnect (detach)
        self.counters: Counter[str] = Counter()
        self.epoch = 0
        self.stopping = False
        self.cache_bytes = 0
        self.tasks: set[asyncio.Task[object]] = set()
        self._lease_seq = 0
        self._id_seq = 0
        self._session_seq = 0
        self._pump_scheduled = False
        self._rotation = 0
        self.restart = RestartPoint()
        self._committing = False
        self._last_commit = 0.0
        self.journal_entries = 0  # in the finished journal past its last snapshot
        self._compacting = False
        self._compact_failed = False
        self._last_compact: float | None = None

    # ------------------------------------------------------------- ids

    def new_request_id(self) -> str:
        self._id_seq += 1
        return f"{self.epoch:x}-{self._id_seq:x}"

    def new_lease_id(self) -> int:
        # Boot number on top: ids never repeat across restarts, so a report
        # about a lease from before a restart can never match a new one.
        # (2**32 grants in one run would wrap into the next boot's range.)
        self._lease_seq += 1
        return (self.epoch << 32) | (self._lease_seq & 0xFFFF_FFFF)

    def new_session_key(self, tenant: str, worker_id: str) -> str:
        self._session_seq += 1
        return f"{tenant}/{worker_id}#{self._session_seq}"

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> None:
        task: asyncio.Task[object] = asyncio.create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def check_serving(self) -> None:
        if self.stopping:
            raise ServingUnavailableError("the server is shutting down; retry on its successor")
        if self.writer.failed:
            raise ServingUnavailableError("the store failed a write; the server must be restarted")

    # ------------------------------------------------------------- pump

    def kick(self) -> None:
        """Pump once the current callback is done (many events, one pump)."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self.pump)

    def pump(self) -> None:
        """Dispatch to workers with credits, drop what passed its deadline, preempt."""
        self._pump_scheduled = False
        if self.stopping:
            return
        now = self.clock.now()
        policy = self.policy
        ready = [
            s for s in self.sessions.values() if s.credits > 0 and not s.closed and not s.draining
        ]
        if ready and policy.queued():
            # One request per worker per round, starting from a rotating worker,
            # so a short queue spreads over the fleet instead of filling one.
            start = self._rotation % len(ready)
            self._rotation += 1
            order = ready[start:] + ready[:start]
            progress = True
            while progress and policy.queued():
                progress = False
                for session in order:
                    if session.credits <= 0:
                        continue
                    for decision in policy.dispatch(now, session.key, 1):
                        self.grant(decision, session)
                        progress = True
        self.drop(policy.expire(now))
        for victim in policy.preemptions(now):
            self.order_preempt(victim, now)

    def grant(self, decision: Dispatch, session: WorkerSession) -> None:
        live = self.live[decision.request.request_id]
        lease = Lease(self.new_lease_id(), live, session, decision.done_output_tokens)
        live.lease = lease
        live.last_worker = session.hello.worker_id
        live.attempts += 1
        session.leases[live.request_id] = lease
        session.credits -= 1
        session.granted += 1
        self.counters["granted"] += 1
        if live.attempts > 1:
            self.counters["regranted"] += 1
        self.observer.granted(decision.request, session.key, live.attempts, self.clock.now())
        session.push(PendingGrant(lease))

    def order_preempt(self, order: Preempt, now: float) -> None:
        # A held session's order waits in its lease (STOPPING) and goes out to
        # the stream that takes it over (Leasing.attach).
        session = (
            self.sessions.get(order.worker_id)
            or self.draining.get(order.worker_id)
            or self.held.get(order.worker_id)
        )
        lease = None if session is None else session.leases.get(order.request_id)
        if session is None or lease is None or lease.state != ACTIVE:
            # Completing (its end is being stored) or already stopping: the
            # policy's pending preemption clears when that run ends.
            return
        if not lease.sent:
            # The worker has not seen its grant: take it back without asking.
            self.revoke(lease)
            self.policy.preempted(order.request_id, lease.done_output_tokens, now)
            self.counters["preempted"] += 1
            self.observer.requeued(order.request_id, session.key, RequeueCause.PREEMPTED, now)
            self.kick()
            return
        lease.state = STOPPING
        lease.stop_at = now
        session.push(StopOut(order.request_id, lease.lease_id, StopReason.PREEMPT))
        self.counters["preempt_orders"] += 1

    def drop(self, dropped: list[Dropped]) -> None:
        for item in dropped:
            live = self.live.get(item.request.request_id)
            if live is not None:
                self.finish(live, State.DROPPED, "its deadline passed while it was queued")

    # ------------------------------------------------------------- leases

    def revoke(self, lease: Lease) -> None:
        """Fence ``lease`` off: nothing it sends counts any more."""
        lease.state = GONE
        live = lease.live
        if live.lease is lease:
            live.lease = None
        session = lease.session
        if session.leases.get(live.request_id) is lease:
            del session.leases[live.request_id]
        if session.closed and not session.leases:
            # A closed session's last lease: its policy worker goes too. (A key is
            # shared by a held session and the stream that took it over, so the
            # session itself must be the one filed.)
            if self.draining.get(session.key) is session:
                del self.draining[session.key]
                self._remove_worker(session)
            elif self.held.get(session.key) is session:
                del self.held[session.key]
                self._remove_worker(session)

    def expire_lease(self, lease: Lease, now: float) -> None:
        """``lease``'s worker is gone: fence it off and put its request back in its
        place (a lease expiry: counted, and told to the policy and the observer)."""
        key = lease.session.key
        self.revoke(lease)
        self.policy.lease_expired(lease.live.request_id, now)
        self.counters["lease_expired"] += 1
        self.observer.requeued(lease.live.request_id, key, RequeueCause.LEASE_EXPIRED, now)

    def detach(
        self,
        session: WorkerSession,
        error: BaseException | None = None,
        *,
        hold: bool | None = None,
    ) -> None:
        """The stream is gone (or went quiet): its leases go back to their places.

        Unless it broke (no ``error``; ``hold`` decides instead when given) and
        its worker keeps its runs across a break (``hello.keeps_leases``) and did
        not say it was leaving: then the session is *held*. Its leases the worker
        has seen stay as they are, in the policy too (its worker stays, so the
        requests stay in flight there), for ``lease_s`` from the break; the
        worker's next stream takes over those its hello names
        (:meth:`Leasing.attach`), and :meth:`tick` releases them all when the
        time is up. Grants not sent yet go back at once. A completing lease
        (its completion read, being stored) is held too: its worker may not
        have heard Settled and names it again, so that answer goes to the
        stream that takes it over (it is stored whether or not one does).
        While held, the session's unused window still counts as free for the
        policy's preemption rule (a worker cannot be put back after a drain)."""
        if session.closed and self.sessions.get(session.key) is not session:
            return  # already detached (held, draining or gone)
        session.close(error)
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        worker = (session.tenant, session.hello.worker_id)
        if self.by_worker.get(worker) is session:
            del self.by_worker[worker]
        self.counters["workers_detached"] += 1
        if hold is None:
            hold = error is None
        if not (hold and session.hello.keeps_leases and not session.leaving and not self.stopping):
            self._release(session)
            return
        now = self.clock.now()
        for lease in list(session.leases.values()):
            if not lease.sent:
                self.expire_lease(lease, now)  # the worker never saw it
        if session.leases:  # running or completing
            session.broke_at = now
            self.held[session.key] = session
            self.counters["leases_held"] += len(session.leases)
        else:
            self._remove_worker(session)
        self.kick()

    def held_of(self, tenant: str, worker_id: str) -> WorkerSession | None:
        """The held session of this worker, if any (at most one: a new stream of
        the worker takes it over or releases it)."""
        for session in self.held.values():
            if session.tenant == tenant and session.hello.worker_id == worker_id:
                return session
        return None

    def release_held(self, session: WorkerSession) -> None:
        """A held session's time is up, or its worker came back without naming its
        leases: they go back to their places as at a break without grace."""
        if self.held.get(session.key) is session:
            del self.held[session.key]  # first: its last revoke must not remove its worker
        self._release(session)

    def _release(self, session: WorkerSession) -> None:
        """Every lease of closed ``session`` back to its place but the completing ones
        (stored in a moment; then the request is over), then its policy worker out
        once nothing runs there."""
        now = self.clock.now()
        for lease in list(session.leases.values()):
            if lease.state != COMPLETING:
                self.expire_lease(lease, now)
        if session.leases:
            self.draining[session.key] = session
        else:
            self._remove_worker(session)
        self.kick()

    def _remove_worker(self, session: WorkerSession) -> None:
        try:
            self.policy.remove_worker(session.key, self.clock.now())
        except SchedulerError:
            log.exception("removing worker %s", session.key)

    # ------------------------------------------------------------- ending

    def finish(
        self,
        live: Live,
        outcome: str,
        reason: str = "",
        *,
        usage: tuple[int, int] | None = None,
        finish_reason: str = "",
        end_mark: bool = True,
        after_stored: AfterStored | None = None,
        view: RequestView | None = None,
    ) -> asyncio.Future[RequestView]:
        """End ``live`` for good: end mark + done record, stored in one write after
        its chunks. The policy must be done with it already, except through
        ``after_stored`` (a completion tells the policy once it is on disk).
        ``view``: its final view as already stored (a restart found it), kept as
        it is instead of one made from ``live``."""
        if live.finishing is not None:
            return live.finishing
        future: asyncio.Future[RequestView] = asyncio.get_running_loop().create_future()
        live.finishing = future
        if live.lease is not None and live.lease.state != COMPLETING:
            self.revoke(live.lease)
        # Worker text (a failure's message, a finish reason) is bounded here,
        # once for the end mark, the done record and the final view.
        ending = _Ending(
            outcome, bounded_text(reason), usage, bounded_text(finish_reason), end_mark, view
        )
        self.spawn(self._finish(live, ending, after_stored), f"finish-{live.request_id}")
        return future

    async def _finish(self, live: Live, ending: _Ending, after_stored: AfterStored | None) -> None:
        future = live.finishing
        assert future is not None
        outcome, reason, usage = ending.outcome, ending.reason, ending.usage
        try:
            try:
                await asyncio.shield(live.stored)  # shared: a cancelled waiter must not cancel it
            except Exception:
                # Never on disk (its submit failed): nothing to write down.
                self.forget(live, outcome, reason, usage)
                future.set_result(self.final_view(live, outcome, reason, usage))
                return
            await self.ensure_chunks_known(live)
            record = live.record
            view = ending.view or self.final_view(live, outcome, reason, usage)
            items: list[Write] = []
            if ending.end_mark:
                props = end_properties(
                    live.request_id,
                    live.next_chunk,
                    outcome,
                    reason=reason,
                    usage=usage,
                    finish_reason=ending.finish_reason,
                )
                items.append(
                    ReplyWrite(record.tenant, record.reply_topic, record.reply_lite, props, b"")
                )
            # The final view for Status after a restart (see .finished), in this
            # write: no fsync of its own. The done record goes last: should a
            # crash tear this write, the end mark without it is found on replay
            # and the request ends there, and a stored done record has its view.
            items.append(FinishedWrite(view))
            items.append(DoneWrite(DoneRecord(live.request_id, outcome, reason)))
            futures = self.writer.write(items)
            futures[-1].add_done_callback(self._note_end)
            await asyncio.gather(*futures)
            self.journal_entries += 1
            if after_stored is not None:
                after_stored()
            self.forget(live, outcome, reason, usage, view=view)
            future.set_result(view)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()
            if not isinstance(exc, Exception):
                raise

    def _note_end(self, future: asyncio.Future[int]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.restart.stored(future.result())

    async def ensure_chunks_known(self, live: Live) -> None:
        """After a restart: count the chunks a request already has in its reply."""
        if live.chunks_known:
            return
        record = live.record
        scan = await self.store.scan_reply(
            record.tenant,
            record.reply_topic,
            record.reply_lite,
            record.reply_from,
            record.request_id,
        )
        if not live.chunks_known:
            live.chunks_known = True
            live.next_chunk = len(scan.chunks)
            live.first_reply_offset = scan.first_offset

    def final_view(
        self, live: Live, outcome: str, reason: str, usage: tuple[int, int] | None
    ) -> RequestView:
        view = live.view()
        tokens = usage or (view.input_tokens, view.output_tokens)
        return replace(
            view,
            state=outcome,
            worker_id=live.last_worker,
            reason=reason,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
        )

    def forget(
        self,
        live: Live,
        outcome: str,
        reason: str,
        usage: tuple[int, int] | None,
        *,
        view: RequestView | None = None,
    ) -> None:
        """``live`` is over: out of the live table, into the finished one (``view``:
        its final view if already made)."""
        if live.lease is not None:
            self.revoke(live.lease)
        if self.live.get(live.request_id) is live:
            del self.live[live.request_id]
        if live.payload is not None:
            self.cache_bytes -= len(live.payload)
            live.payload = None
        record = live.record
        if record.idempotency_key:
            # Remembered a while: its submit record stays open in the restart point.
            for offset in self.keys.finished(record, live.offset, self.wall()):
                self.restart.close(offset)
        elif live.offset is not None:
            self.restart.close(live.offset)
        if view is None:
            view = self.final_view(live, outcome, reason, usage)
        self.remember_finished(view)
        self.counters[outcome] += 1
        self.observer.finished(live.request_id, outcome, self.clock.now())

    def remember_completed(self, request_id: str, lease_id: int, session: WorkerSession) -> None:
        """``lease_id``'s completion finished ``request_id`` (it is stored): a worker
        whose stream broke before it heard Settled names that lease again and sends
        the completion again; it is answered Settled again (:meth:`completed_by`).
        The last ``finished_capacity`` of them, as Status remembers finished
        requests; one forgotten is answered with a cancel order instead, which
        ends the worker's run as well."""
        completed = self.completed_leases
        completed[request_id] = (lease_id, session.tenant, session.hello.worker_id)
        while len(completed) > self.options.finished_capacity:
            completed.popitem(last=False)

    def completed_by(self, request_id: str, lease_id: int, session: WorkerSession) -> bool:
        """Whether ``lease_id``, a lease of ``session``'s worker, finished
        ``request_id`` with its completion (as remembered)."""
        worker = (session.tenant, session.hello.worker_id)
        return self.completed_leases.get(request_id) == (lease_id, *worker)

    def remember_finished(self, view: RequestView) -> None:
        """Keep ``view`` for Status and Cancel, the last ``finished_capacity`` of them."""
        finished = self.finished
        # A request finishes once, but one whose done record a crash tore off
        # finishes again after the restart: it counts from its last finish.
        finished.pop(view.request_id, None)
        finished[view.request_id] = view
        while len(finished) > self.options.finished_capacity:
            finished.popitem(last=False)

    # ------------------------------------------------------------- finished journal

    def maybe_compact(self, now: float) -> None:
        """Fold the finished journal into a new snapshot every ``finished_compact_s``
        while it remembers anything, and at once when it holds ``finished_capacity``
        entries past its last snapshot (see .finished). The journal then never holds
        the log back much further than ``finished_compact_s`` (a snapshot pins the
        log written after it, so an idle server rewrites its own too), and a
        restart reads at most a snapshot and ``finished_capacity`` entries."""
        if self._last_compact is None:
            self._last_compact = now  # the first tick: the clock starts here
        if self._compacting:
            return
        options = self.options
        entries = self.journal_entries
        remembers = bool(entries or self.finished)
        due = remembers and now - self._last_compact >= options.finished_compact_s
        full = entries >= options.finished_capacity and not self._compact_failed
        if not (due or full):
            return
        self._compacting = True
        self._last_compact = now
        self.spawn(self._compact(entries), "compact-finished")

    async def _compact(self, entries: int) -> None:
        try:
            await self.store.compact_finished(self.options.finished_capacity)
            # Those entries, and any stored while the store was reading, are in
            # the snapshot or after it; counting them all again is harmless.
            self.journal_entries = max(0, self.journal_entries - entries)
            self._compact_failed = False
        except ServingError as exc:
            # Tried again when next due by time, not at every tick.
            self._compact_failed = True
            log.warning("finished journal not compacted: %s", exc)
        finally:
            self._compacting = False

    # ------------------------------------------------------------- restart point

    def maybe_commit(self, now: float) -> None:
        if self._committing or now - self._last_commit < self.options.commit_interval_s:
            return
        low = self.restart.point()
        if low <= self.restart.committed:
            return
        self._committing = True
        self._last_commit = now
        self.spawn(self._commit(low), "commit-restart-point")

    async def _commit(self, low: int) -> None:
        try:
            # No flush needed: an offset closes only once its done record is stored.
            await self.store.commit(low)
            self.restart.committed = low
        except ServingUnavailableError as exc:
            log.warning("restart point not moved: %s", exc)
        finally:
            self._committing = False

    # ------------------------------------------------------------- tick

    def tick(self) -> None:
        """Lease times, unanswered preempt orders, then a pump and maybe a commit."""
        now = self.clock.now()
        for session in list(self.held.values()):
            assert session.broke_at is not None
            if now - session.broke_at > session.lease_s:
                self.counters["held_expired"] += 1
                self.release_held(session)
        for session in list(self.sessions.values()):
            if now - session.last_heard > session.lease_s:
                self.detach(  # a quiet worker gets no grace: it had lease_s already
                    session,
                    WrongStateError(
                        f"worker {session.hello.worker_id!r} sent nothing for "
                        f"{session.lease_s:g} s (lease_s): its leases were released"
                    ),
                )
                continue
            for lease in list(session.leases.values()):
                if (
                    lease.state == STOPPING
                    and lease.stop_at is not None
                    and now - lease.stop_at > session.lease_s
                ):
                    self.expire_lease(lease, now)
                    session.push(StopOut(lease.live.request_id, lease.lease_id, StopReason.CANCEL))
        self.pump()
        for offset in self.keys.prune(self.wall()):
            self.restart.close(offset)
        self.maybe_commit(now)
        self.maybe_compact(now)
