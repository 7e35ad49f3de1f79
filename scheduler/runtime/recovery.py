"""Rebuild the queue after a restart: none lost, none run twice at once.

The requests queue is replayed from the committed restart point; every
submit record without a later done record is a request the previous
process had admitted and not finished, queued or running. Each goes back
into the policy in its original order. None is running now: the previous
process's leases died with it (their lease ids carry the old boot number,
so nothing a worker sends about them is accepted), and a request that had
output resumes from what its reply lite-topic holds, read on its next grant.

The requests were admitted once already, so they go back in without
admission's quotas and caps: the policy is given a config with those
lifted (and with every tenant the records name), the requests are submitted,
then the real config is put back, which keeps them all queued. Deadlines
were written on the wall clock and are carried over to the monotonic clock;
a request whose deadline passed while the server was down is dropped, its
reply stream ended. Fair-share counters start afresh.

Finished requests' final views come back from their own journal (see
:mod:`.finished`), the last ``finished_capacity`` of them, so Status answers
for a request that ended before the restart as it did before. One whose
view is stored but not its done record (a crash tore the write that ended
it, after its end mark and its view) ended: it is ended again with that
view, its done record written, and not queued.

Idempotency keys come back with their records: an unfinished request's key
answers to it again, and a finished one's is remembered by the same rule as
before the restart (its submit record is in the replay because the key held
the restart point there; see :mod:`.idempotency`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from types import MappingProxyType

from scheduler.runtime.core import Core
from scheduler.runtime.live import Live
from scheduler.runtime.records import SubmitRecord
from scheduler.runtime.values import RequestView, State
from scheduler.types import Refusal, RefusalReason, Request, SchedulerConfig, TenantConfig

__all__ = ["lifted", "restore"]

log = logging.getLogger("tidegate.scheduler")


def lifted(config: SchedulerConfig, records: list[SubmitRecord]) -> SchedulerConfig:
    """``config`` with admission's limits lifted for ``records`` (see the module docstring)."""
    top: dict[str, int] = {}
    for record in records:
        top[record.tenant] = max(top.get(record.tenant, record.priority), record.priority)
    tenants: dict[str, TenantConfig] = {}
    for name, tenant in config.tenants.items():
        tenants[name] = replace(
            tenant,
            rate=None,
            max_queued=max(tenant.max_queued, len(records)),
            max_priority=max(tenant.max_priority, top.get(name, tenant.max_priority)),
        )
    for name, priority in top.items():
        if name not in tenants:
            tenants[name] = TenantConfig(name=name, max_priority=priority, max_queued=len(records))
    return replace(
        config,
        tenants=MappingProxyType(tenants),
        max_queued_total=max(config.max_queued_total, len(records) + 1),
        shed_queue_fraction=1.0,
    )


async def restore(core: Core) -> int:
    """Queue again what the log says is unfinished; returns how many."""
    recalled = await core.store.recall_finished(core.options.finished_capacity)
    for view in recalled.views:
        core.remember_finished(view)
    core.journal_entries = recalled.entries
    replayed = await core.store.replay()
    core.restart.committed = replayed.start
    if replayed.end:
        core.restart.stored(replayed.end - 1)
    alive: dict[str, tuple[int, SubmitRecord]] = {}
    keyed_done: list[tuple[int, SubmitRecord]] = []  # in the order they finished
    for offset, record in replayed.records:
        if isinstance(record, SubmitRecord):
            alive[record.request_id] = (offset, record)
        else:
            submitted = alive.pop(record.request_id, None)
            if submitted is not None and submitted[1].idempotency_key:
                keyed_done.append(submitted)
    wall = core.wall()
    for offset, record in keyed_done:
        core.restart.track(offset)
        for free in core.keys.remember(record, offset, wall):
            core.restart.close(free)
    ended: list[tuple[int, SubmitRecord, RequestView]] = []
    for request_id in list(alive):
        # Its final view without its done record: a crash tore the write that
        # ended it after its end mark and its view, so it ended, as the view
        # says. It is ended again with that view (its done record written)
        # rather than queued to wait for a worker that would only find its end
        # mark, and end it then with less than the view knows.
        known = core.finished.get(request_id)
        if known is not None:
            del core.finished[request_id]
            offset, record = alive.pop(request_id)
            ended.append((offset, record, known))
    for offset, record, view in ended:
        live = _live(core, offset, record)
        usage = (view.input_tokens, view.output_tokens)
        core.finish(live, view.state, view.reason, usage=usage, end_mark=False, view=view)
    if not alive:
        return 0
    policy = core.policy
    now = core.clock.now()
    real = core.config
    policy.update_config(lifted(real, [record for _, record in alive.values()]), now)
    refused: list[tuple[Live, Refusal]] = []
    try:
        for offset, record in alive.values():
            deadline = None
            if record.deadline_wall is not None:
                deadline = now + (record.deadline_wall - wall)
            request = _request(record, now, deadline)
            live = _live(core, offset, record, request)
            decision = policy.submit(request, now)
            if isinstance(decision, Refusal):
                refused.append((live, decision))
    finally:
        policy.update_config(real, now)
    for live, refusal in refused:
        if refusal.reason == RefusalReason.DEADLINE:
            core.finish(live, State.DROPPED, "its deadline passed while the server was down")
        else:
            log.error("restart: request %s refused (%s)", live.request_id, refusal.detail)
            core.finish(
                live, State.FAILED, f"could not be queued after a restart: {refusal.detail}"
            )
    core.counters["restored"] += len(alive) - len(refused)
    log.info("restart: %d unfinished requests queued again", len(alive) - len(refused))
    return len(alive)


def _request(record: SubmitRecord, now: float, deadline: float | None) -> Request:
    """The scheduler's request of submit ``record``, arriving again at ``now``."""
    return Request(
        record.request_id,
        record.tenant,
        record.priority,
        record.input_tokens,
        record.output_tokens,
        now,
        deadline,
        record.session,
    )


def _live(core: Core, offset: int, record: SubmitRecord, request: Request | None = None) -> Live:
    """The live request of submit ``record`` at ``offset``, in the core's tables."""
    if request is None:  # never queued: the policy does not see it
        request = _request(record, core.clock.now(), None)
    stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stored.set_result(None)
    live = Live(
        record, request, stored, payload=None, payload_size=0, offset=offset, chunks_known=False
    )
    core.live[record.request_id] = live
    if record.idempotency_key:
        core.keys.admit(record.tenant, record.idempotency_key, record.request_id)
    core.restart.track(offset)
    return live
