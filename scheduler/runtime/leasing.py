"""The workers' side: Lease streams in, grants and orders out.

A worker attaches with a hello and gets a :class:`WorkerSession`; each of
its messages is applied by :meth:`Leasing.receive` in field order (credits,
feedback, chunks, progress, stopped, failed, completions, draining), and
:meth:`Leasing.outgoing` yields what the stream must send. Every report
names a lease id; only the current lease of the request on this very
stream counts, anything else is answered with a ``RejectOut`` (fencing).

Chunks must arrive in index order: an index already accepted is a
duplicate (dropped, so a resend is harmless), one past the next is a gap
(refused). Accepted chunks go to the writer at once; a completion is stored
after them, and only then does the policy hear of it.

A draining worker (``WorkerInput.draining``) is granted nothing more: the
policy closes its window, the pump skips it, and a grant decided for it but
not sent yet is taken back (the request goes back to its place, as for an
expired lease, without counting an attempt). Its running leases go on. The
stream answers with a ``DrainingOut``, after every grant already sent.

Reconnect grace: the session of a worker that keeps its runs across a break
(``hello.keeps_leases``) is held when its stream breaks (:meth:`Core.detach`).
The worker's next stream (same tenant and worker id) takes over the held
leases its hello names (``hello.held``, request id and lease id): the new
session inherits the held one's key, so the policy sees one worker whose
requests never left it (its window and in-flight counts stay as they were),
and the leases keep their ids; the worker sends their chunks again from
their grant's index (the stored ones are dropped as duplicates). A held
lease the hello does not name goes back to the queue at once, as at a break
without grace. The worker names a lease until its completion is settled,
since one lost with the stream would have the request run again: a
completing lease (read, being stored) is taken over like a running one, so
its Settled goes to the new stream; a name whose completion this worker's
lease already stored is answered Settled again, and so is that completion
when it comes again (its chunks are dropped as duplicates). Any other name
that matches no lease of the held session is answered with a cancel order
for it (the worker stops that run) and changes nothing else. A worker that
opens a second stream while its first is still open replaces it as always;
if the new hello names leases, the first stream is taken as broken and held
for the new one to take over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re

from scheduler.errors import SchedulerError
from scheduler.runtime.core import Core
from scheduler.runtime.errors import (
    ChunkGapError,
    InvalidFieldError,
    RoleDeniedError,
    ServingError,
    StaleLeaseError,
    TooMuchError,
    WrongStateError,
)
from scheduler.runtime.live import ACTIVE, COMPLETING, GONE, STOPPING, Lease, Live
from scheduler.runtime.observer import RequeueCause
from scheduler.runtime.records import chunk_properties
from scheduler.runtime.sessions import PendingGrant, WorkerSession
from scheduler.runtime.store import ReplyWrite
from scheduler.runtime.values import (
    ChunkIn,
    CompletionIn,
    DrainingOut,
    FailedIn,
    GrantOut,
    HeldLease,
    Outgoing,
    RejectOut,
    SettledOut,
    State,
    StopOut,
    StoppedIn,
    StopReason,
    WorkerHello,
    WorkerInput,
)

__all__ = ["WORKER_ID_RULE", "Leasing"]

log = logging.getLogger("tidegate.scheduler")

WORKER_ID_RULE = "1 to 64 characters of [A-Za-z0-9_.:@=+-]"
_WORKER_ID = re.compile(r"[A-Za-z0-9_.:@=+-]{1,64}")
_RUNNING = (ACTIVE, STOPPING)


class Leasing:
    """Worker streams over a :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    # ------------------------------------------------------------- streams

    def attach(self, tenant: str, hello: WorkerHello) -> WorkerSession:
        core = self.core
        core.check_serving()
        if tenant not in core.worker_tenants:
            raise RoleDeniedError(
                f"tenant {tenant!r} is not a worker tenant (role: worker): only a fleet's "
                "key may open a Lease stream"
            )
        if _WORKER_ID.fullmatch(hello.worker_id) is None:
            raise InvalidFieldError(
                f"hello.worker_id {hello.worker_id!r} breaks the rule {WORKER_ID_RULE}"
            )
        options = core.options
        lease_s = hello.lease_s or options.lease_s
        if not options.min_lease_s <= lease_s <= options.max_lease_s:
            raise InvalidFieldError(
                f"hello.lease_s is {hello.lease_s!r}; it must be 0 (the default) or in "
                f"[{options.min_lease_s:g}, {options.max_lease_s:g}]"
            )
        old = core.by_worker.get((tenant, hello.worker_id))
        if old is not None:
            core.detach(
                old,
                WrongStateError("a new stream with the same worker_id replaced this one"),
                hold=bool(hello.held),  # it names leases: take them over as after a break
            )
        now = core.clock.now()
        held = core.held_of(tenant, hello.worker_id)
        taken, refused = _claim(held, hello.held)
        if held is not None and not taken:
            core.release_held(held)  # back, naming none of them: as at a plain break
        key = held.key if held is not None and taken else None
        session = WorkerSession(
            tenant, hello, key or core.new_session_key(tenant, hello.worker_id), lease_s, now
        )
        if held is not None and taken:
            self._take_over(held, session, taken, now)
        else:
            core.policy.add_worker(session.key, now)
        core.sessions[session.key] = session
        core.by_worker[(tenant, hello.worker_id)] = session
        core.counters["workers_attached"] += 1
        for name in refused:
            if core.completed_by(name.request_id, name.lease_id, session):
                # Its completion was stored; the Settled went to the broken stream.
                core.counters["held_settled"] += 1
                session.push(SettledOut(name.request_id, name.lease_id))
                continue
            # Not this worker's any more (expired, cancelled, finished otherwise,
            # another worker's, before a restart): it must stop that run.
            core.counters["held_refused"] += 1
            session.push(StopOut(name.request_id, name.lease_id, StopReason.CANCEL))
        return session

    def _take_over(
        self, held: WorkerSession, session: WorkerSession, taken: list[Lease], now: float
    ) -> None:
        """``session`` continues ``held`` under its key: the leases its worker named
        and the completing ones move to it; the others go back to the queue."""
        core = self.core
        del core.held[held.key]  # first: no revoke below may remove the policy worker
        named = {lease.lease_id for lease in taken}
        for lease in list(held.leases.values()):
            if lease.state != COMPLETING and lease.lease_id not in named:
                core.expire_lease(lease, now)
        for rid, lease in list(held.leases.items()):
            del held.leases[rid]
            lease.session = session
            session.leases[rid] = lease
            if lease.state == STOPPING:
                # The preempt order went to the broken stream, or came while
                # nothing was attached: say it again here. The worker hears it
                # only now, so its lease_s to answer (see Core.tick) starts now:
                # from the first order, a late reconnect would be left so little
                # that the request is queued again while this worker still runs it.
                lease.stop_at = now
                session.push(StopOut(rid, lease.lease_id, StopReason.PREEMPT))
        if held.draining:
            # The policy worker is the same, drain included: no grant follows here.
            session.draining = True
            session.push(DrainingOut())
        core.counters["leases_reattached"] += len(taken)
        core.kick()

    def detach(self, session: WorkerSession) -> None:
        self.core.detach(session)

    def receive(self, session: WorkerSession, message: WorkerInput) -> None:
        """Apply one worker message (after the hello)."""
        core = self.core
        if session.closed:
            raise session.error or WrongStateError("this Lease stream was closed")
        now = core.clock.now()
        session.last_heard = now
        if message.credits:
            session.credits = min(session.credits + message.credits, core.options.max_credits)
            core.kick()
        if message.feedback is not None:
            core.policy.feedback(session.key, message.feedback, now)
            core.observer.feedback(session.key, message.feedback, now)
            core.kick()
        if message.chunks:
            self._chunks(session, message.chunks)
        for progress in message.progress:
            lease = self._lease(session, progress.request_id, progress.lease_id, _RUNNING)
            if lease is not None and progress.first_token:
                core.policy.first_token(progress.request_id, now)
                core.observer.first_token(progress.request_id, session.key, now)
        for stopped in message.stopped:
            self._stopped(session, stopped, now)
        for failed in message.failed:
            self._failed(session, failed, now)
        for completion in message.completions:
            self._completed(session, completion)
        if message.draining and not session.draining:
            self._drain(session, now)
        if message.leaving:
            session.leaving = True  # its end releases its leases at once (no grace)

    def _drain(self, session: WorkerSession, now: float) -> None:
        core = self.core
        session.draining = True
        core.policy.drain_worker(session.key, now)
        core.counters["workers_draining"] += 1
        for lease in list(session.leases.values()):
            if lease.sent or lease.state != ACTIVE:
                continue
            # Decided before the drain, not on the wire yet: the worker never
            # sees it (outgoing skips a revoked lease).
            live = lease.live
            core.revoke(lease)
            live.attempts -= 1
            live.last_worker = lease.previous_worker  # it never reached this one
            core.policy.lease_expired(live.request_id, now)
            core.counters["drain_taken_back"] += 1
            core.observer.requeued(live.request_id, session.key, RequeueCause.DRAINED, now)
        session.push(DrainingOut())  # after every grant already on its way
        core.kick()

    def _reject(
        self, session: WorkerSession, request_id: str, lease_id: int, error: ServingError
    ) -> None:
        self.core.counters["rejected"] += 1
        session.push(RejectOut(request_id, lease_id, error))

    def _lease(
        self, session: WorkerSession, request_id: str, lease_id: int, states: tuple[str, ...]
    ) -> Lease | None:
        lease = session.leases.get(request_id)
        if lease is None or lease.lease_id != lease_id or lease.state not in states:
            self._reject(
                session,
                request_id,
                lease_id,
                StaleLeaseError(
                    f"lease {lease_id:#x} of request {request_id!r} is not current on this "
                    "stream (expired, preempted, cancelled, finished, or from before a restart)"
                ),
            )
            return None
        return lease

    def _chunks(self, session: WorkerSession, chunks: tuple[ChunkIn, ...]) -> None:
        # Runs once per chunk of every stream: the accepted path is inlined (one
        # lease look-up, no call), the refusals go through _lease and _reject.
        core = self.core
        limit = core.options.max_chunk_bytes
        leases = session.leases
        writes: list[ReplyWrite] = []
        owners: list[Live] = []
        tokens = 0
        duplicates = 0
        for chunk in chunks:
            rid = chunk.request_id
            lease = leases.get(rid)
            if lease is None or lease.lease_id != chunk.lease_id or lease.state not in _RUNNING:
                if self._ended_here(session, lease, rid, chunk.lease_id):
                    duplicates += 1  # said again after a reconnect: stored already
                else:
                    self._lease(session, rid, chunk.lease_id, _RUNNING)  # rejects it
                continue
            live = lease.live
            index = chunk.index
            if len(chunk.data) > limit:
                self._reject(
                    session,
                    rid,
                    chunk.lease_id,
                    TooMuchError(f"chunk {index}: {len(chunk.data)} bytes, above {limit}"),
                )
                continue
            if index != live.next_chunk:
                if index < live.next_chunk:
                    duplicates += 1
                    continue
                self._reject(
                    session,
                    rid,
                    chunk.lease_id,
                    ChunkGapError(
                        f"chunk {index} of request {rid!r}: the next index "
                        f"is {live.next_chunk}; chunks are stored in order without gaps"
                    ),
                )
                continue
            live.next_chunk = index + 1
            record = live.record
            writes.append(
                ReplyWrite(
                    record.tenant,
                    record.reply_topic,
                    record.reply_lite,
                    chunk_properties(rid, index),
                    chunk.data,
                )
            )
            owners.append(live)
            tokens += chunk.tokens
        if duplicates:
            core.counters["chunk_duplicates"] += duplicates
        if not writes:
            return
        core.counters["chunks"] += len(writes)
        if tokens:
            core.observer.tokens(session.key, tokens)
        for live, future in zip(owners, core.writer.write(writes), strict=True):
            live.pending = future
            if live.first_reply_offset is None:
                future.add_done_callback(functools.partial(_first_offset, live))

    def _stopped(self, session: WorkerSession, stopped: StoppedIn, now: float) -> None:
        core = self.core
        lease = self._lease(session, stopped.request_id, stopped.lease_id, _RUNNING)
        if lease is None:
            return
        core.revoke(lease)
        core.policy.preempted(
            stopped.request_id,
            stopped.done_output_tokens,
            now,
            input_processed=stopped.input_processed,
        )
        core.counters["preempted"] += 1
        core.observer.requeued(stopped.request_id, session.key, RequeueCause.PREEMPTED, now)
        core.kick()

    def _failed(self, session: WorkerSession, failed: FailedIn, now: float) -> None:
        core = self.core
        lease = self._lease(session, failed.request_id, failed.lease_id, _RUNNING)
        if lease is None:
            return
        live = lease.live
        live.failures += 1
        core.revoke(lease)
        if failed.retryable and live.failures < core.options.max_attempts:
            core.policy.lease_expired(failed.request_id, now)
            core.counters["retried"] += 1
            core.observer.requeued(failed.request_id, session.key, RequeueCause.RETRIED, now)
            core.kick()
            return
        core.policy.cancel(failed.request_id, now)
        reason = f"worker {session.hello.worker_id!r} failed it: {failed.message}"
        if failed.retryable:
            reason += f" (after {live.failures} attempts)"
        core.finish(live, State.FAILED, reason)

    def _ended_here(
        self, session: WorkerSession, lease: Lease | None, request_id: str, lease_id: int
    ) -> bool:
        """Whether ``lease_id`` of ``request_id`` is this worker's lease whose
        completion came already: completing on this stream, or finished by it.
        A worker back after a break sends such a lease's chunks and completion
        again, not knowing whether they arrived (see :meth:`_completed`)."""
        if lease is not None and lease.lease_id == lease_id:
            return lease.state == COMPLETING
        return self.core.completed_by(request_id, lease_id, session)

    def _completed(self, session: WorkerSession, completion: CompletionIn) -> None:
        core = self.core
        rid, lease_id = completion.request_id, completion.lease_id
        current = session.leases.get(rid)
        if (current is None or current.state not in _RUNNING) and self._ended_here(
            session, current, rid, lease_id
        ):
            # Said again by a worker back after a break (it had not heard Settled):
            # answered as the first one was, or will be once it is stored.
            core.counters["completion_duplicates"] += 1
            if current is None or current.lease_id != lease_id:
                session.push(SettledOut(rid, lease_id))
            return
        lease = self._lease(session, rid, lease_id, _RUNNING)
        if lease is None:
            return
        lease.state = COMPLETING
        core.observer.completing(rid, core.clock.now())
        usage = (completion.input_tokens, completion.output_tokens)

        def stored() -> None:
            try:
                core.policy.complete(rid, usage[0], usage[1], core.clock.now())
            except SchedulerError:
                log.exception("complete(%r)", rid)
            core.remember_completed(rid, lease_id, lease.session)
            # To the stream the lease is on now: a reconnect may have taken it over.
            lease.session.push(SettledOut(rid, lease_id))
            core.kick()

        core.finish(
            lease.live,
            State.COMPLETED,
            usage=usage,
            finish_reason=completion.finish_reason,
            after_stored=stored,
        )

    # ------------------------------------------------------------- grants

    async def outgoing(self, session: WorkerSession) -> Outgoing | None:
        """The next item to send on the stream; None once it is closed."""
        while True:
            item = await session.next()
            if item is None:
                if session.error is not None:
                    raise session.error
                return None
            if not isinstance(item, PendingGrant):
                return item
            grant = await self.prepare(item.lease)
            if grant is not None:
                item.lease.sent = True
                return grant
            # Its lease went while it was prepared: the worker never saw it,
            # so the credit it took is still the worker's.
            if not session.closed and not session.draining:
                session.credits += 1
                self.core.kick()

    async def prepare(self, lease: Lease) -> GrantOut | None:
        """What the worker needs to run ``lease``; None if the lease went meanwhile."""
        core = self.core
        live = lease.live
        try:
            await asyncio.shield(live.stored)  # shared: a cancelled waiter must not cancel it
        except Exception:
            return None
        try:
            return await self._prepare(lease, live)
        except ServingError as exc:
            if not lease.current:
                return None
            log.warning("cannot grant %s: %s", live.request_id, exc)
            core.revoke(lease)
            live.failures += 1
            now = core.clock.now()
            if live.failures < core.options.max_attempts:
                core.policy.lease_expired(live.request_id, now)
                core.observer.requeued(
                    live.request_id, lease.session.key, RequeueCause.RETRIED, now
                )
                core.kick()
            else:
                core.policy.cancel(live.request_id, now)
                core.finish(live, State.FAILED, f"its payload cannot be read: {exc}")
            return None

    async def _prepare(self, lease: Lease, live: Live) -> GrantOut | None:
        core = self.core
        record = live.record
        if live.pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(live.pending)  # earlier runs' chunks are stored first
        resume = b""
        if live.next_chunk > 0 or not live.chunks_known:
            start = live.first_reply_offset
            scan = await core.store.scan_reply(
                record.tenant,
                record.reply_topic,
                record.reply_lite,
                record.reply_from if start is None else start,
                record.request_id,
            )
            if not lease.current:
                return None
            if scan.end is not None:
                # It ended before a restart, which lost only its done record.
                core.policy.cancel(live.request_id, core.clock.now())
                core.finish(live, scan.end.outcome or State.COMPLETED, end_mark=False)
                return None
            live.chunks_known = True
            live.next_chunk = len(scan.chunks)
            if scan.first_offset is not None:
                live.first_reply_offset = scan.first_offset
            resume = b"".join(scan.chunks)
        options = core.options
        if live.payload is not None:
            payload: bytes | None = live.payload
            size = len(live.payload)
            pieces = None
        else:
            assert live.offset is not None
            stored = await core.store.read_payload(live.offset, options.inline_bytes)
            payload, size, pieces = stored.data, stored.size, stored.pieces
        if not lease.current:
            if pieces is not None:
                await _close(pieces)
            return None
        deadline = live.request.deadline_s
        left = 0.0 if deadline is None else max(deadline - core.clock.now(), 1e-3)
        return GrantOut(
            request_id=record.request_id,
            lease_id=lease.lease_id,
            tenant=record.tenant,
            priority=record.priority,
            payload=payload,
            payload_size=size,
            payload_pieces=pieces,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            properties=core.observer.carry(record.request_id, record.properties),
            next_chunk=live.next_chunk,
            done_output_tokens=lease.done_output_tokens,
            resume_output=resume,
            deadline_s=left,
            attempt=live.attempts,
            reply_topic=record.reply_topic,
            reply_lite_topic=record.reply_lite,
        )


def _claim(
    held: WorkerSession | None, names: tuple[HeldLease, ...]
) -> tuple[list[Lease], list[HeldLease]]:
    """Of the leases a hello names: those ``held`` has (same lease id), to take
    over, running or completing (its worker sent the completion but did not
    hear Settled: that answer then goes to the new stream); and those it has not
    at all, to refuse (or answer, see :meth:`Leasing.attach`)."""
    taken: list[Lease] = []
    refused: list[HeldLease] = []
    for name in names:
        lease = None if held is None else held.leases.get(name.request_id)
        if lease is None or lease.lease_id != name.lease_id or lease.state == GONE:
            refused.append(name)
        elif lease not in taken:
            taken.append(lease)
    return taken, refused


def _first_offset(live: Live, future: asyncio.Future[int]) -> None:
    if live.first_reply_offset is None and not future.cancelled() and future.exception() is None:
        live.first_reply_offset = future.result()


async def _close(pieces: object) -> None:
    aclose = getattr(pieces, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
