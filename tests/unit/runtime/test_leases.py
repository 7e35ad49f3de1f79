"""Leases: credits, fencing, lost workers, preemption, failures (virtual clock, memory store)."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.runtime import (
    ChunkIn,
    FailedIn,
    GrantOut,
    ProgressIn,
    RuntimeOptions,
    State,
    StopOut,
    SubmitSpec,
    WorkerInput,
)
from scheduler.runtime.errors import ChunkGapError, StaleLeaseError, WrongStateError
from scheduler.types import WorkerFeedback
from tests.unit.runtime.support import (
    FakeWorker,
    advance,
    make_runtime,
    one_granted,
    reply,
    run,
    settle,
    stream_of,
    tenants_config,
)


def test_grants_never_exceed_credits_and_spread_over_workers() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        one, two = FakeWorker(runtime, "w1"), FakeWorker(runtime, "w2")
        one.credit(2)
        two.credit(2)
        for i in range(5):
            await runtime.submit("acme", SubmitSpec(session=f"s{i}"), b"p")
        got_one = [g for g in await one.drain() if isinstance(g, GrantOut)]
        got_two = [g for g in await two.drain() if isinstance(g, GrantOut)]
        assert (len(got_one), len(got_two)) == (2, 2)
        assert runtime.stats().policy.queued == 1
        one.complete(got_one[0])  # gives its credit back with the completion
        await settle()
        # The credit comes first in the message, so the grant may overtake the settlement.
        assert sorted(type(x).__name__ for x in await one.drain()) == ["GrantOut", "SettledOut"]
        lease_ids = [g.lease_id for g in one.inbox + two.inbox if isinstance(g, GrantOut)]
        assert len(set(lease_ids)) == 5
        await runtime.stop()

    run(body)


def test_chunks_in_order_duplicates_dropped_gaps_refused() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        submitted, worker, grant = await one_granted(runtime)
        worker.chunks(grant, b"a", b"b")
        worker.chunks(grant, b"b-again", start=1)  # a resend: dropped
        worker.chunks(grant, b"d", start=3)  # a gap: refused
        worker.chunks(grant, b"c", start=2)
        worker.complete(grant)
        await settle()
        rejected = worker.rejections()
        assert [type(r.error) for r in rejected] == [ChunkGapError]
        assert "the next index is 2" in str(rejected[0].error)
        assert stream_of(reply(store, "acme", "chatbot", "s"), submitted.request_id) == (
            [b"a", b"b", b"c"],
            State.COMPLETED,
        )
        assert runtime.stats().counters["chunk_duplicates"] == 1
        await runtime.stop()

    run(body)


def test_chunks_of_many_requests_are_written_in_few_batches() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        worker.credit(8)
        for i in range(8):
            await runtime.submit("acme", SubmitSpec(session=f"s{i}"), b"p")
        grants = [g for g in await worker.drain() if isinstance(g, GrantOut)]
        before = store.writes
        worker.send(
            WorkerInput(chunks=tuple(ChunkIn(g.request_id, g.lease_id, 0, b"x") for g in grants))
        )
        await settle()
        assert store.writes - before == 1  # one store write for eight requests' chunks
        await runtime.stop()

    run(body)


def test_a_lost_worker_requeues_and_the_next_run_resumes_without_gap_or_duplicate() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        submitted = await runtime.submit("acme", SubmitSpec(session="s"), b"prompt")
        first = FakeWorker(runtime, "w1")
        first.credit(1)
        grant = await first.grant()
        first.send(WorkerInput(progress=(ProgressIn(grant.request_id, grant.lease_id),)))
        first.chunks(grant, b"one ", b"two ")
        first.close()  # the worker died mid-stream
        await settle()
        assert runtime.status("acme", submitted.request_id).state == State.QUEUED
        assert runtime.stats().counters["lease_expired"] == 1

        second = FakeWorker(runtime, "w2")
        second.credit(1)
        again = await second.grant()
        assert again.lease_id != grant.lease_id
        assert (again.next_chunk, again.resume_output, again.attempt) == (2, b"one two ", 2)
        # Whatever the dead worker still manages to send is refused.
        with pytest.raises(WrongStateError):
            first.chunks(grant, b"three", start=2)
        second.chunks(again, b"three")
        second.complete(again)
        await settle()
        assert stream_of(reply(store, "acme", "chatbot", "s"), submitted.request_id) == (
            [b"one ", b"two ", b"three"],
            State.COMPLETED,
        )
        await runtime.stop()

    run(body)


def test_a_worker_that_goes_quiet_loses_its_leases() -> None:
    async def body() -> None:
        runtime, _, clock = make_runtime(options=RuntimeOptions(lease_s=2.0))
        await runtime.start()
        submitted = await runtime.submit("acme", SubmitSpec(), b"p")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        grant = await worker.grant()
        await advance(clock, 1.5)
        worker.send(WorkerInput(feedback=WorkerFeedback(ttft_s=0.1)))  # a heartbeat
        await advance(clock, 1.5)
        assert runtime.status("acme", submitted.request_id).state == State.RUNNING
        await advance(clock, 1.0)
        assert runtime.status("acme", submitted.request_id).state == State.QUEUED
        await settle()
        assert isinstance(worker.ended, WrongStateError)
        assert "sent nothing for 2 s" in str(worker.ended)
        with pytest.raises(WrongStateError):
            worker.complete(grant)
        await runtime.stop()

    run(body)


def test_a_new_stream_with_the_same_worker_id_replaces_the_old() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"p")
        old = FakeWorker(runtime, "w1")
        old.credit(1)
        grant = await old.grant()
        new = FakeWorker(runtime, "w1")
        new.credit(1)
        again = await new.grant()
        assert again.request_id == grant.request_id
        assert again.lease_id != grant.lease_id
        await settle()
        assert isinstance(old.ended, WrongStateError)
        assert runtime.stats().workers == 1
        await runtime.stop()

    run(body)


def test_preemption_stops_the_low_band_and_it_resumes_after() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime(config=tenants_config(window=1))
        await runtime.start()
        low = await runtime.submit("acme", SubmitSpec(session="low", priority=0), b"low")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        grant = await worker.grant()
        worker.chunks(grant, b"L0", b"L1")
        await settle()
        high = await runtime.submit("acme", SubmitSpec(session="high", priority=2), b"high")
        stop = await worker.next()
        assert stop == StopOut(low.request_id, grant.lease_id, "preempt")
        worker.chunks(grant, b"L2", start=2)  # still its lease until it says stopped
        worker.stopped(grant, done=3)
        high_grant = await worker.grant()
        assert high_grant.request_id == high.request_id
        worker.chunks(high_grant, b"H0")
        worker.complete(high_grant)
        resumed = await worker.grant()
        assert resumed.request_id == low.request_id
        assert (resumed.next_chunk, resumed.done_output_tokens) == (3, 3)
        assert resumed.resume_output == b"L0L1L2"
        worker.chunks(grant, b"stale", start=3)  # the old lease is fenced off
        worker.chunks(resumed, b"L3")
        worker.complete(resumed)
        await settle()
        assert [type(r.error) for r in worker.rejections()] == [StaleLeaseError]
        assert stream_of(reply(store, "acme", "chatbot", "low"), low.request_id) == (
            [b"L0", b"L1", b"L2", b"L3"],
            State.COMPLETED,
        )
        stats = runtime.stats()
        assert stats.policy.preemptions == 1
        assert stats.counters["preempt_orders"] == 1
        await runtime.stop()

    run(body)


def test_an_unanswered_preempt_order_releases_the_lease() -> None:
    async def body() -> None:
        runtime, _, clock = make_runtime(
            config=tenants_config(window=1), options=RuntimeOptions(lease_s=1.0)
        )
        await runtime.start()
        low = await runtime.submit("acme", SubmitSpec(priority=0), b"low")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        grant = await worker.grant()
        await runtime.submit("acme", SubmitSpec(priority=2), b"high")
        assert isinstance(await worker.next(), StopOut)
        for _ in range(3):  # heartbeats, but no answer to the order
            await advance(clock, 0.5)
            worker.send(WorkerInput())
        assert runtime.status("acme", low.request_id).state == State.QUEUED
        assert await worker.drain() == [StopOut(low.request_id, grant.lease_id, "cancel")]
        worker.stopped(grant, done=1)  # too late: fenced off
        await settle()
        assert [type(r.error) for r in worker.rejections()] == [StaleLeaseError]
        assert runtime.stats().counters["lease_expired"] == 1
        await runtime.stop()

    run(body)


def test_failures_are_retried_then_the_request_fails() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime(options=RuntimeOptions(max_attempts=2))
        await runtime.start()
        submitted = await runtime.submit("acme", SubmitSpec(session="s"), b"p")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        for attempt in (1, 2):
            grant = await worker.grant()
            assert grant.attempt == attempt
            worker.send(
                WorkerInput(
                    credits=1, failed=(FailedIn(grant.request_id, grant.lease_id, "oom", True),)
                )
            )
        await settle()
        view = runtime.status("acme", submitted.request_id)
        assert view.state == State.FAILED
        assert "oom (after 2 attempts)" in view.reason
        assert stream_of(reply(store, "acme", "chatbot", "s"), submitted.request_id) == (
            [],
            State.FAILED,
        )
        await runtime.stop()

    run(body)


def test_feedback_reaches_the_window() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        window = runtime.stats().policy.workers[worker.session.key].window
        worker.send(WorkerInput(feedback=WorkerFeedback(kv_usage=0.99, queue_depth=50)))
        assert runtime.stats().policy.workers[worker.session.key].window < window
        await runtime.stop()

    run(body)


def test_a_grant_not_yet_sent_is_taken_back_without_telling_the_worker() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        store.gate = asyncio.Event()  # the submit write, and so the grant, hangs
        submitting = asyncio.ensure_future(runtime.submit("acme", SubmitSpec(), b"p"))
        await settle()
        live = next(iter(runtime.core.live.values()))
        assert live.lease is not None
        assert not live.lease.sent
        cancelling = asyncio.ensure_future(runtime.cancel("acme", live.request_id))
        await settle()
        store.gate.set()
        await submitting
        cancelled, view = await cancelling
        assert cancelled
        assert view.state == State.CANCELLED
        assert await worker.drain() == []  # neither the grant nor a stop for it
        assert worker.session.credits == 1  # the credit came back
        await runtime.stop()

    run(body)
