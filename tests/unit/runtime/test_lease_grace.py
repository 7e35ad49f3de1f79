"""Reconnect grace: a broken stream's leases held for lease_s and taken over by the
worker's next stream (virtual clock, memory store)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from scheduler.runtime import (
    DrainingOut,
    GrantOut,
    MemoryRequestStore,
    Runtime,
    RuntimeOptions,
    SettledOut,
    State,
    StopOut,
    SubmitSpec,
    Submitted,
    WorkerHello,
    WorkerInput,
)
from scheduler.runtime.values import HeldLease, StopReason
from tests.unit.runtime.support import (
    FLEET,
    FakeWorker,
    advance,
    make_runtime,
    reply,
    run,
    settle,
    stream_of,
    tenants_config,
)


@dataclass
class KeepingWorker(FakeWorker):
    """A worker that keeps its runs across a break; ``held``: what its hello names."""

    held: tuple[HeldLease, ...] = ()

    def __post_init__(self) -> None:
        hello = WorkerHello(self.worker_id, capacity=8, held=self.held, keeps_leases=True)
        self.session = self.runtime.attach(FLEET, hello)
        self._reader = asyncio.ensure_future(self._read())


async def granted_to_a_keeper(
    runtime: Runtime,
    spec: SubmitSpec | None = None,
    payload: bytes = b"prompt",
    *,
    credits: int = 1,
) -> tuple[Submitted, KeepingWorker, GrantOut]:
    """An acme request (by default session "s", payload b"prompt") granted to w1, a
    worker that keeps its runs and gave ``credits``."""
    spec = spec if spec is not None else SubmitSpec(session="s")
    submitted = await runtime.submit("acme", spec, payload)
    worker = KeepingWorker(runtime, "w1")
    worker.credit(credits)
    return submitted, worker, await worker.grant()


def named(*grants: GrantOut) -> tuple[HeldLease, ...]:
    """What a hello names to say it still holds these grants' leases."""
    return tuple(HeldLease(grant.request_id, grant.lease_id) for grant in grants)


def stored_reply(store: MemoryRequestStore, submitted: Submitted) -> tuple[list[bytes], str | None]:
    """The request's stored chunks and end outcome (session "s" of acme's chatbot)."""
    return stream_of(reply(store, "acme", "chatbot", "s"), submitted.request_id)


def test_a_worker_back_within_lease_s_keeps_its_lease_and_its_stream_goes_on() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime(options=RuntimeOptions(lease_s=2.0))
        await runtime.start()
        submitted, first, grant = await granted_to_a_keeper(runtime)
        first.chunks(grant, b"one ", b"two ")
        key = first.session.key
        first.close()  # the stream breaks; the worker goes on
        await advance(clock, 1.0)
        view = runtime.status("acme", submitted.request_id)
        assert (view.state, view.worker_id, view.attempts) == (State.RUNNING, "w1", 1)
        assert runtime.stats().policy.in_flight == 1
        assert runtime.stats().workers == 0  # no stream, so nothing is granted to it

        back = KeepingWorker(runtime, "w1", held=named(grant))
        assert back.session.key == key  # the same worker for the policy
        # What it made meanwhile comes again from the grant's index: the stored
        # part is dropped, the rest stored once, in order.
        back.chunks(grant, b"one ", b"two ", b"three ")
        back.complete(grant)
        await settle()
        assert any(isinstance(item, SettledOut) for item in await back.drain())
        await advance(clock, 3.0)  # past the grace: nothing is released any more
        counters = runtime.stats().counters
        assert counters.get("lease_expired", 0) == 0
        assert (counters["leases_held"], counters["leases_reattached"]) == (1, 1)
        assert counters["chunk_duplicates"] == 2
        assert stored_reply(store, submitted) == ([b"one ", b"two ", b"three "], State.COMPLETED)
        view = runtime.status("acme", submitted.request_id)
        assert (view.state, view.attempts, view.worker_id) == (State.COMPLETED, 1, "w1")
        assert runtime.stats().policy.in_flight == 0
        await runtime.stop()

    run(body)


def test_no_reconnect_within_lease_s_puts_the_request_back_as_at_a_plain_break() -> None:
    async def body() -> None:
        runtime, _, clock = make_runtime(options=RuntimeOptions(lease_s=2.0))
        await runtime.start()
        submitted, first, grant = await granted_to_a_keeper(runtime)
        first.chunks(grant, b"one ")
        first.close()
        await advance(clock, 1.5)
        assert runtime.status("acme", submitted.request_id).state == State.RUNNING
        await advance(clock, 1.0)
        assert runtime.status("acme", submitted.request_id).state == State.QUEUED
        assert runtime.stats().counters["lease_expired"] == 1
        second = FakeWorker(runtime, "w2")
        second.credit(1)
        again = await second.grant()
        assert (again.next_chunk, again.resume_output, again.attempt) == (1, b"one ", 2)
        # Too late: the worker's hello names a lease the server no longer holds.
        late = KeepingWorker(runtime, "w1", held=named(grant))
        assert await late.next() == StopOut(grant.request_id, grant.lease_id, StopReason.CANCEL)
        assert runtime.status("acme", submitted.request_id).worker_id == "w2"
        await runtime.stop()

    run(body)


def test_a_hello_naming_nothing_releases_the_held_leases_at_once() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime(options=RuntimeOptions(lease_s=2.0))
        await runtime.start()
        submitted, first, _ = await granted_to_a_keeper(runtime, SubmitSpec(), b"p")
        first.close()
        await settle()
        assert runtime.status("acme", submitted.request_id).state == State.RUNNING
        fresh = KeepingWorker(runtime, "w1")
        await settle()
        assert runtime.status("acme", submitted.request_id).state == State.QUEUED
        assert runtime.stats().counters["lease_expired"] == 1
        fresh.credit(1)
        again = await fresh.grant()
        assert again.attempt == 2
        await runtime.stop()

    run(body)


def test_names_it_does_not_hold_are_refused_and_disturb_nothing() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime(options=RuntimeOptions(lease_s=2.0))
        await runtime.start()
        a = await runtime.submit("acme", SubmitSpec(), b"a")
        b = await runtime.submit("acme", SubmitSpec(), b"b")
        other = FakeWorker(runtime, "w2")
        other.credit(1)
        theirs = await other.grant()
        first = KeepingWorker(runtime, "w1")
        first.credit(1)
        mine = await first.grant()
        assert {mine.request_id, theirs.request_id} == {a.request_id, b.request_id}
        first.close()
        await settle()
        names = (
            HeldLease(mine.request_id, mine.lease_id),
            HeldLease(theirs.request_id, theirs.lease_id),  # another worker's
            HeldLease(mine.request_id, mine.lease_id + 99),  # not its lease id
        )
        back = KeepingWorker(runtime, "w1", held=names)
        stops = [await back.next(), await back.next()]
        assert stops == [
            StopOut(theirs.request_id, theirs.lease_id, StopReason.CANCEL),
            StopOut(mine.request_id, mine.lease_id + 99, StopReason.CANCEL),
        ]
        assert runtime.stats().counters["held_refused"] == 2
        assert runtime.status("acme", theirs.request_id).worker_id == "w2"
        other.chunks(theirs, b"fine")
        other.complete(theirs)
        back.complete(mine)  # its own lease was taken over
        await settle()
        for request in (a, b):
            assert runtime.status("acme", request.request_id).state == State.COMPLETED
        assert runtime.stats().counters.get("lease_expired", 0) == 0
        await runtime.stop()

    run(body)


def test_a_preempt_order_made_while_away_reaches_the_new_stream() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime(config=tenants_config(window=1))
        await runtime.start()
        low, first, grant = await granted_to_a_keeper(
            runtime, SubmitSpec(priority=0), b"low", credits=2
        )
        first.close()
        await settle()
        await runtime.submit("acme", SubmitSpec(priority=2), b"high")  # wants its slot
        await settle()
        back = KeepingWorker(runtime, "w1", held=named(grant))
        assert await back.next() == StopOut(low.request_id, grant.lease_id, StopReason.PREEMPT)
        back.stopped(grant, 0)
        back.credit(1)
        await settle()
        assert runtime.stats().counters["preempted"] == 1
        assert runtime.stats().counters.get("lease_expired", 0) == 0
        await runtime.stop()

    run(body)


def test_a_second_stream_naming_the_leases_takes_them_over_from_the_open_one() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        submitted, old, grant = await granted_to_a_keeper(runtime, SubmitSpec(), b"p")
        new = KeepingWorker(runtime, "w1", held=named(grant))
        await settle()
        assert old.ended is not None  # replaced
        new.complete(grant)
        await settle()
        assert runtime.status("acme", submitted.request_id).state == State.COMPLETED
        assert runtime.stats().counters.get("lease_expired", 0) == 0
        assert runtime.stats().workers == 1
        await runtime.stop()

    run(body)


def test_no_grace_for_a_worker_leaving_or_one_that_does_not_keep_its_runs() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        first, leaving, _ = await granted_to_a_keeper(runtime, SubmitSpec(), b"p")
        leaving.send(WorkerInput(leaving=True))
        leaving.close()
        await settle()
        assert runtime.status("acme", first.request_id).state == State.QUEUED
        plain = FakeWorker(runtime, "w2")  # an older worker: hello without keeps_leases
        plain.credit(1)
        await plain.grant()
        plain.close()
        await settle()
        assert runtime.status("acme", first.request_id).state == State.QUEUED
        assert runtime.stats().counters["lease_expired"] == 2
        assert runtime.stats().counters.get("leases_held", 0) == 0
        await runtime.stop()

    run(body)


def test_a_stream_taking_over_a_draining_one_is_draining_too() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"p")
        await runtime.submit("acme", SubmitSpec(), b"q")
        first = KeepingWorker(runtime, "w1")
        first.credit(1)
        grant = await first.grant()
        first.send(WorkerInput(draining=True))
        first.close()
        await settle()
        back = KeepingWorker(runtime, "w1", held=named(grant))
        back.credit(4)
        assert [type(item) for item in await back.drain()] == [DrainingOut]
        back.complete(grant)
        await settle()
        assert runtime.stats().policy.queued == 1  # the other one waits for another worker
        await runtime.stop()

    run(body)


def test_a_preempt_order_resent_at_a_late_take_over_gives_the_worker_lease_s_to_answer() -> None:
    async def body() -> None:
        runtime, _, clock = make_runtime(
            config=tenants_config(window=1), options=RuntimeOptions(lease_s=2.0)
        )
        await runtime.start()
        low, first, grant = await granted_to_a_keeper(
            runtime, SubmitSpec(priority=0), b"low", credits=2
        )
        first.close()
        await settle()
        await runtime.submit("acme", SubmitSpec(priority=2), b"high")  # the order is made now
        await advance(clock, 1.5)
        back = KeepingWorker(runtime, "w1", held=named(grant))
        assert await back.next() == StopOut(low.request_id, grant.lease_id, StopReason.PREEMPT)
        # The order reached the worker only now: it has lease_s from here to answer,
        # not what was left of lease_s from when the order was made.
        await advance(clock, 1.0)
        assert runtime.stats().counters.get("lease_expired", 0) == 0
        assert runtime.status("acme", low.request_id).state == State.RUNNING
        back.stopped(grant, 0)
        back.credit(1)
        await settle()
        assert runtime.stats().counters["preempted"] == 1
        assert back.stops() == [StopOut(low.request_id, grant.lease_id, StopReason.PREEMPT)]
        await runtime.stop()

    run(body)


def test_a_completion_being_stored_at_the_break_is_taken_over_and_settled_on_the_new_stream() -> (
    None
):
    async def body() -> None:
        runtime, store, _ = make_runtime(options=RuntimeOptions(lease_s=2.0))
        await runtime.start()
        submitted, first, grant = await granted_to_a_keeper(runtime)
        first.chunks(grant, b"one ")
        await settle()
        store.gate = asyncio.Event()  # its completion is read, not stored yet
        first.complete(grant)
        first.close()  # the stream breaks before the worker hears Settled
        await settle()
        # The worker cannot tell whether its completion arrived: it names the lease
        # and sends the chunks and the completion again.
        back = KeepingWorker(runtime, "w1", held=named(grant))
        back.chunks(grant, b"one ")
        back.complete(grant)
        await settle()
        store.gate.set()
        await settle()
        assert await back.drain() == [SettledOut(grant.request_id, grant.lease_id)]
        assert first.settled() == []
        counters = runtime.stats().counters
        assert counters.get("lease_expired", 0) == 0
        assert counters.get("rejected", 0) == 0
        assert counters.get("held_refused", 0) == 0
        view = runtime.status("acme", submitted.request_id)
        assert (view.state, view.attempts) == (State.COMPLETED, 1)
        assert stored_reply(store, submitted) == ([b"one "], State.COMPLETED)
        assert (runtime.stats().policy.queued, runtime.stats().policy.in_flight) == (0, 0)
        await runtime.stop()

    run(body)


def test_a_lease_named_after_its_completion_was_stored_is_answered_settled_again() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime(options=RuntimeOptions(lease_s=2.0))
        await runtime.start()
        submitted, first, grant = await granted_to_a_keeper(runtime)
        first.chunks(grant, b"one ")
        first.complete(grant)
        await settle()  # stored and settled; the Settled dies with the stream
        first.close()
        await settle()
        back = KeepingWorker(runtime, "w1", held=named(grant))
        assert await back.next() == SettledOut(grant.request_id, grant.lease_id)
        # What it sends again is dropped as said before, and the completion is
        # answered as the first time: nothing is refused.
        back.chunks(grant, b"one ")
        back.complete(grant)
        assert await back.drain() == [SettledOut(grant.request_id, grant.lease_id)]
        counters = runtime.stats().counters
        assert counters.get("rejected", 0) == 0
        assert counters.get("held_refused", 0) == 0
        assert counters["chunk_duplicates"] == 1
        view = runtime.status("acme", submitted.request_id)
        assert (view.state, view.attempts) == (State.COMPLETED, 1)
        assert stored_reply(store, submitted) == ([b"one "], State.COMPLETED)
        # Another worker naming it is still refused: it was not that worker's lease.
        other = KeepingWorker(runtime, "w2", held=named(grant))
        assert await other.next() == StopOut(grant.request_id, grant.lease_id, StopReason.CANCEL)
        await runtime.stop()

    run(body)
