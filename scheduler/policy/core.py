"""The scheduler core: one class that implements ``Policy`` for every discipline.

It owns admission, the life of each request (queued, running, done),
workers and their windows, deadlines, preemption and the counters behind
``stats()``; the discipline it is given only decides which queued request
goes next, and the ledger (``charging.py``) what each tenant is charged.
Every method takes ``now`` and returns values: the simulator and the
server drive the very same object.
"""

from __future__ import annotations

import random
from collections import Counter
from types import MappingProxyType

from scheduler.errors import InvalidRequestError, UnknownRequestError
from scheduler.policy.admission import Admission
from scheduler.policy.buckets import RateEstimator
from scheduler.policy.charging import Ledger
from scheduler.policy.deadlines import Deadlines
from scheduler.policy.entry import DONE, QUEUED, RUNNING, Entry
from scheduler.policy.interface import QueueDiscipline
from scheduler.policy.preemption import choose_victims
from scheduler.policy.snapshot import band_stats, tenant_stats, worker_stats
from scheduler.policy.tenants import TenantState
from scheduler.policy.validation import validate_config
from scheduler.policy.workers import WorkerPool, WorkerState
from scheduler.types import (
    Admitted,
    Dispatch,
    Dropped,
    PolicyStats,
    Preempt,
    Refusal,
    RefusalReason,
    Request,
    SchedulerConfig,
    WorkerFeedback,
)

__all__ = ["Scheduler"]


class Scheduler:
    """A ``Policy``: admission + bookkeeping around one queue discipline."""

    def __init__(
        self, config: SchedulerConfig, rng: random.Random, discipline: QueueDiscipline
    ) -> None:
        validate_config(config)
        self.name = discipline.name
        self._config = config
        self._discipline = discipline
        discipline.set_band_shares(config.band_shares)
        self._admission = Admission(config)
        self._ledger = Ledger(config.input_token_weight, config.output_token_weight, discipline)
        self._pool = WorkerPool(rng)
        self._tenants: dict[str, TenantState] = {
            name: TenantState(tenant, 0.0) for name, tenant in config.tenants.items()
        }
        self._entries: dict[str, Entry] = {}  # queued or running, by request id
        self._running_by_band: dict[int, dict[str, Entry]] = {}
        self._band_queued: Counter[int] = Counter()
        self._deadlines = Deadlines()
        self._dropped_at_dispatch: list[Dropped] = []
        self._seq = 0
        self._dispatch_no = 0
        self._queued = 0
        self._in_flight = 0
        self._pending_preempts = 0
        self._dispatch_rate = RateEstimator()
        self._counts: Counter[str] = Counter()
        self._refusals: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()

    # ------------------------------------------------------------ admission

    def submit(self, request: Request, now: float) -> Admitted | Refusal:
        rid = request.request_id
        if request.input_tokens < 0 or request.output_tokens < 0:
            raise InvalidRequestError(
                f"request {rid!r}: input_tokens {request.input_tokens} and output_tokens "
                f"{request.output_tokens} must both be >= 0"
            )
        tenant = self._tenants.get(request.tenant)
        if rid in self._entries:
            refusal: Refusal | None = Refusal(
                rid,
                RefusalReason.DUPLICATE,
                0.0,
                f"request id {rid!r} is already queued or running",
            )
        else:
            refusal = self._admission.check(
                request, tenant, self._queued, self._dispatch_rate.per_s(now), now
            )
        if refusal is not None:
            self._refusals[refusal.reason] += 1
            if tenant is not None:
                tenant.refusals[refusal.reason] += 1
            return refusal
        assert tenant is not None
        self._seq += 1
        entry = Entry(request, self._seq, tenant)
        self._entries[rid] = entry
        tenant.admitted += 1
        self._counts["admitted"] += 1
        self._enqueue(entry)
        self._discipline.push(entry)
        return Admitted(rid)

    def _enqueue(self, entry: Entry) -> None:
        entry.state = QUEUED
        entry.worker_id = None
        entry.tenant.queued += 1
        self._band_queued[entry.band] += 1
        self._queued += 1
        self._deadlines.push(entry)

    def _unqueue(self, entry: Entry) -> None:
        entry.tenant.queued -= 1
        self._band_queued[entry.band] -= 1
        self._queued -= 1

    # ------------------------------------------------------------ workers

    def add_worker(self, worker_id: str, now: float) -> None:
        self._pool.add(worker_id, self._config.window)

    def remove_worker(self, worker_id: str, now: float) -> list[Request]:
        worker = self._pool.remove(worker_id)
        entries = sorted(worker.running.values(), key=lambda entry: entry.seq)
        for entry in entries:
            self._release(entry, worker)
            self._ledger.settle_done(entry)
            self._requeue(entry)
        return [entry.request for entry in entries]

    def drain_worker(self, worker_id: str, now: float) -> None:
        worker = self._pool.get(worker_id)
        if not worker.draining:
            worker.draining = True
            worker.swaps = 0
            self._pool.changed(worker)

    def feedback(self, worker_id: str, feedback: WorkerFeedback, now: float) -> None:
        worker = self._pool.get(worker_id)
        if worker.window.observe(feedback, len(worker.running), worker.dispatched, now):
            self._pool.changed(worker)

    # ------------------------------------------------------------ dispatch

    def _next(self, now: float) -> Entry | None:
        """The next queued entry to run; entries past their deadline are dropped on the way."""
        estimate = self._ledger.estimate
        while self._queued:
            entry = self._discipline.pop(estimate)
            if entry is None:
                return None
            self._unqueue(entry)
            deadline = entry.request.deadline_s
            if deadline is not None and deadline <= now:
                self._ledger.settle_done(entry)
                self._dropped_at_dispatch.append(self._drop(entry))
                continue
            return entry
        return None

    def _assign(self, entry: Entry, worker: WorkerState, now: float) -> Dispatch:
        rid = entry.request.request_id
        entry.state = RUNNING
        entry.worker_id = worker.worker_id
        self._dispatch_no += 1
        entry.dispatch_no = self._dispatch_no
        worker.dispatched += 1
        entry.worker_index = worker.dispatched
        worker.take(worker.dispatched)
        worker.running[rid] = entry
        worker.load_tokens += entry.request.input_tokens + entry.request.output_tokens
        running = self._running_by_band.get(entry.band)
        if running is None:
            running = self._running_by_band[entry.band] = {}
        running[rid] = entry
        tenant = entry.tenant
        tenant.in_flight += 1
        tenant.dispatched += 1
        tenant.dispatch_rate.record(now)
        self._in_flight += 1
        self._dispatch_rate.record(now)
        return Dispatch(entry.request, worker.worker_id, entry.done_output_tokens)

    def dispatch(
        self, now: float, worker_id: str | None = None, limit: int | None = None
    ) -> list[Dispatch]:
        out: list[Dispatch] = []
        if limit is not None and limit <= 0:
            return out
        pool = self._pool
        if worker_id is not None:
            worker = pool.get(worker_id)
            room = worker.free if limit is None else min(worker.free, limit)
            while room > 0:
                entry = self._next(now)
                if entry is None:
                    break
                out.append(self._assign(entry, worker, now))
                room -= 1
            if out:
                pool.changed(worker)
            return out
        while self._queued and (limit is None or len(out) < limit):
            best = pool.best()
            if best is None:
                break
            entry = self._next(now)
            if entry is None:
                break
            out.append(self._assign(entry, best, now))
            pool.changed(best)
        return out

    # ------------------------------------------------------------ running requests

    def _running(self, request_id: str, what: str) -> Entry:
        entry = self._entries.get(request_id)
        if entry is None or entry.state != RUNNING:
            state = "unknown" if entry is None else "queued, not running"
            raise UnknownRequestError(f"{what}({request_id!r}): the request is {state}")
        return entry

    def _release(self, entry: Entry, worker: WorkerState, *, swap: bool = False) -> None:
        """Take a running entry off its worker (the caller re-ranks the worker).

        ``swap``: it was stopped because the policy asked, for a waiting
        higher-band request (``WorkerState.release``)."""
        rid = entry.request.request_id
        del worker.running[rid]
        worker.release(swap=swap and entry.preempting)
        worker.load_tokens -= entry.request.input_tokens + entry.request.output_tokens
        if entry.preempting:
            entry.preempting = False
            worker.preempting -= 1
            self._pending_preempts -= 1
        del self._running_by_band[entry.band][rid]
        entry.tenant.in_flight -= 1
        self._in_flight -= 1
        entry.worker_id = None

    def _release_running(self, entry: Entry, *, swap: bool = False) -> None:
        assert entry.worker_id is not None
        worker = self._pool.workers[entry.worker_id]
        self._release(entry, worker, swap=swap)
        self._pool.changed(worker)

    def _requeue(self, entry: Entry) -> None:
        self._enqueue(entry)
        self._discipline.requeue(entry)
        self._counts["requeued"] += 1

    def _heard_from(self, entry: Entry) -> None:
        assert entry.worker_id is not None
        self._pool.workers[entry.worker_id].window.heard_from(entry.worker_index)

    def first_token(self, request_id: str, now: float) -> None:
        entry = self._running(request_id, "first_token")
        self._heard_from(entry)
        entry.input_done = entry.request.input_tokens  # the whole prompt was processed
        if entry.first_token_s is None:
            entry.first_token_s = now

    def complete(self, request_id: str, input_tokens: int, output_tokens: int, now: float) -> None:
        if input_tokens < 0 or output_tokens < 0:
            raise InvalidRequestError(
                f"complete({request_id!r}): input_tokens {input_tokens} and output_tokens "
                f"{output_tokens} must both be >= 0"
            )
        entry = self._running(request_id, "complete")
        self._heard_from(entry)
        self._release_running(entry)
        self._ledger.settle_usage(entry, input_tokens, output_tokens)
        entry.state = DONE
        del self._entries[request_id]
        tenant = entry.tenant
        tenant.completed += 1
        tenant.served_input_tokens += input_tokens
        tenant.served_output_tokens += output_tokens
        self._counts["completed"] += 1

    def preempted(
        self,
        request_id: str,
        done_output_tokens: int,
        now: float,
        *,
        input_processed: int | None = None,
    ) -> None:
        if done_output_tokens < 0 or (input_processed is not None and input_processed < 0):
            raise InvalidRequestError(
                f"preempted({request_id!r}): done_output_tokens {done_output_tokens} and "
                f"input_processed {input_processed} must be >= 0"
            )
        entry = self._running(request_id, "preempted")
        self._release_running(entry, swap=True)
        # Counts are cumulative; a smaller report cannot undo work already done.
        entry.done_output_tokens = max(entry.done_output_tokens, done_output_tokens)
        input_tokens = entry.request.input_tokens
        # Unknown: assume the prompt ran (the runtime stopped it while running).
        done_input = input_tokens if input_processed is None else min(input_processed, input_tokens)
        entry.input_done = max(entry.input_done, done_input)
        self._ledger.settle_done(entry)
        entry.tenant.preempted += 1
        self._counts["preemptions"] += 1
        self._requeue(entry)

    def lease_expired(self, request_id: str, now: float) -> None:
        entry = self._running(request_id, "lease_expired")
        self._release_running(entry)
        self._ledger.settle_done(entry)
        self._requeue(entry)

    def preemptions(self, now: float) -> list[Preempt]:
        discipline = self._discipline
        if not discipline.preemptive or not self._queued or self._pool.any_free():
            return []
        waiting = sorted(
            ((band, count) for band, count in self._band_queued.items() if count > 0),
            reverse=True,
        )
        victims = choose_victims(
            waiting,
            self._running_by_band,
            self._pending_preempts,
            discipline.may_preempt,
            self._pool.workers,
        )
        self._pending_preempts += len(victims)
        out: list[Preempt] = []
        for entry in victims:
            assert entry.worker_id is not None
            out.append(Preempt(entry.request.request_id, entry.worker_id))
        return out

    # ------------------------------------------------------------ leaving the queue

    def _drop(self, entry: Entry) -> Dropped:
        entry.state = DONE
        del self._entries[entry.request.request_id]
        entry.tenant.dropped[RefusalReason.DEADLINE] += 1
        self._dropped[RefusalReason.DEADLINE] += 1
        return Dropped(entry.request, RefusalReason.DEADLINE)

    def cancel(self, request_id: str, now: float) -> bool:
        entry = self._entries.get(request_id)
        if entry is None:
            return False
        if entry.state == QUEUED:
            entry.state = DONE
            self._unqueue(entry)
            self._discipline.discard(entry)
            # Preempted earlier, then cancelled: keep what it was served.
            self._ledger.settle_done(entry)
        else:
            self._release_running(entry)
            entry.state = DONE
        del self._entries[request_id]
        self._counts["cancelled"] += 1
        return True

    def expire(self, now: float) -> list[Dropped]:
        out = self._dropped_at_dispatch
        self._dropped_at_dispatch = []
        for entry in self._deadlines.due(now):
            entry.state = DONE
            self._unqueue(entry)
            self._discipline.discard(entry)
            self._ledger.settle_done(entry)
            out.append(self._drop(entry))
        return out

    # ------------------------------------------------------------ config and stats

    def update_config(self, config: SchedulerConfig, now: float) -> None:
        validate_config(config)
        self._config = config
        self._admission.reconfigure(config)
        self._ledger.input_w = config.input_token_weight
        self._ledger.output_w = config.output_token_weight
        self._discipline.set_band_shares(config.band_shares)
        for name, tenant in self._tenants.items():
            if name not in config.tenants:
                tenant.configured = False  # refuses new work; its queued requests stay
        for name, tenant_config in config.tenants.items():
            state = self._tenants.get(name)
            if state is None:
                self._tenants[name] = TenantState(tenant_config, now)
            else:
                state.reconfigure(tenant_config, now)
        for worker in self._pool.workers.values():
            worker.window.reconfigure(config.window, len(worker.running))
            self._pool.changed(worker)

    def queued(self) -> int:
        return self._queued

    def in_flight(self) -> int:
        return self._in_flight

    def stats(self) -> PolicyStats:
        counts = self._counts
        return PolicyStats(
            policy=self.name,
            queued=self._queued,
            in_flight=self._in_flight,
            admitted=counts["admitted"],
            dispatched=self._dispatch_no,
            completed=counts["completed"],
            cancelled=counts["cancelled"],
            preemptions=counts["preemptions"],
            requeued=counts["requeued"],
            tenants=tenant_stats(self._tenants, self._discipline),
            bands=band_stats(self._band_queued, self._running_by_band),
            workers=worker_stats(self._pool.workers),
            refusals=MappingProxyType(dict(self._refusals)),
            dropped=MappingProxyType(dict(self._dropped)),
        )
