"""Restarts over the same store: nothing lost, nothing run twice at once, the stream continuous."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from scheduler.clock import VirtualClock
from scheduler.runtime import RejectOut, RuntimeOptions, State, SubmitSpec, WorkerInput
from scheduler.runtime.errors import RefusedError, RequestNotFoundError, ServingUnavailableError
from scheduler.runtime.records import SubmitRecord
from scheduler.runtime.recovery import lifted
from scheduler.types import RateLimit
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


def test_queued_and_running_requests_survive_a_crash() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime()
        await runtime.start()
        ids = [
            (await runtime.submit("acme", SubmitSpec(session=f"s{i}"), b"p%d" % i)).request_id
            for i in range(4)
        ]
        worker = FakeWorker(runtime, "w1")
        worker.credit(2)
        first, second = await worker.grant(), await worker.grant()
        worker.chunks(first, b"a0", b"a1")
        worker.complete(second)
        await settle()
        assert runtime.status("acme", second.request_id).state == State.COMPLETED
        old_epoch = runtime.epoch
        # A crash: no stop, the process is gone. A new one opens the same store.
        again, _, _ = make_runtime(store.reopen(), clock=VirtualClock(clock.now() + 50))
        await again.start()
        assert again.epoch > old_epoch
        stats = again.stats()
        assert stats.counters["restored"] == 3
        assert (stats.policy.queued, stats.policy.in_flight) == (3, 0)
        for rid in (ids[0], ids[2], ids[3]):
            assert again.status("acme", rid).state == State.QUEUED
        # The old process's worker reconnects: its old lease means nothing here.
        back = FakeWorker(again, "w1")
        back.chunks(first, b"a2", start=2)
        assert isinstance(await back.next(), RejectOut)
        back.credit(3)
        grants = {g.request_id: g for g in [await back.grant() for _ in range(3)]}
        resumed = grants[first.request_id]
        assert resumed.lease_id >> 32 == again.epoch
        assert (resumed.next_chunk, resumed.resume_output, resumed.payload) == (2, b"a0a1", b"p0")
        assert grants[ids[3]].payload == b"p3"
        back.chunks(resumed, b"a2")
        for grant in grants.values():
            back.complete(grant)
        await settle()
        assert len(back.rejections()) == 1  # the chunk sent under the old lease
        assert stream_of(reply(store, "acme", "chatbot", "s0"), first.request_id) == (
            [b"a0", b"a1", b"a2"],
            State.COMPLETED,
        )
        for i in (1, 2, 3):
            _, outcome = stream_of(reply(store, "acme", "chatbot", f"s{i}"), ids[i])
            assert outcome == State.COMPLETED
        await again.stop()

    run(body)


def test_a_clean_stop_moves_the_restart_point_past_finished_requests() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        worker.credit(3)
        for i in range(3):
            await runtime.submit("acme", SubmitSpec(session=f"s{i}"), b"p")
        grants = [await worker.grant() for _ in range(3)]
        worker.complete(grants[0])
        worker.complete(grants[1])
        await settle()
        await runtime.stop()
        # Records: 3 submits, 2 done; the first unfinished submit is offset 2.
        assert store.data.committed == 2
        again, _, _ = make_runtime(store.reopen())
        await again.start()
        assert again.stats().counters["restored"] == 1
        await again.stop()

    run(body)


def test_the_restart_point_moves_while_serving() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        await runtime.submit("acme", SubmitSpec(), b"p")
        worker.complete(await worker.grant(), credits=0)
        await settle()
        await runtime.submit("acme", SubmitSpec(), b"q")  # stays queued (no credit)
        await advance(clock, 1.2)
        assert store.data.committed == 2  # past the finished one, at the queued one
        await runtime.stop()

    run(body)


def test_a_deadline_that_passed_while_down_drops_the_request() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime()
        await runtime.start()
        gone = await runtime.submit("acme", SubmitSpec(session="s", deadline_s=5.0), b"p")
        kept = await runtime.submit("acme", SubmitSpec(session="t", deadline_s=60.0), b"q")
        again, _, _ = make_runtime(store.reopen(), clock=VirtualClock(clock.now() + 10))
        await again.start()
        await settle()
        assert again.status("acme", gone.request_id).state == State.DROPPED
        assert stream_of(reply(store, "acme", "chatbot", "s"), gone.request_id) == (
            [],
            State.DROPPED,
        )
        assert again.status("acme", kept.request_id).state == State.QUEUED
        await again.stop()

    run(body)


def test_restored_requests_skip_quotas_but_new_ones_meet_them() -> None:
    async def body() -> None:
        config = tenants_config(rate=RateLimit(requests_per_s=1.0, burst_s=1.0), max_queued=1)
        runtime, store, clock = make_runtime(config=config)
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"p")
        # More than the quota now allows were admitted before (e.g. a lower quota after a reload).
        runtime.update_config(tenants_config())
        await runtime.submit("acme", SubmitSpec(), b"q")
        await runtime.submit("acme", SubmitSpec(), b"r")
        again, _, _ = make_runtime(store.reopen(), config=config, clock=clock)
        await again.start()
        assert again.stats().policy.queued == 3
        await again.stop()

    run(body)


def test_a_request_whose_end_was_stored_but_not_its_done_record_ends_on_restart() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        submitted, worker, grant = await one_granted(runtime)
        worker.chunks(grant, b"x")
        worker.complete(grant)
        await settle()
        requests = store.data.queue(("", "requests", ""))
        assert requests[-1].properties["kind"] == "done"
        requests.pop()  # the torn tail of a crash
        again, _, _ = make_runtime(store.reopen())
        await again.start()
        back = FakeWorker(again, "w1")
        back.credit(1)
        await settle()
        assert await back.drain() == []  # not run again
        assert again.status("acme", submitted.request_id).state == State.COMPLETED
        assert stream_of(reply(store, "acme", "chatbot", "s"), submitted.request_id) == (
            [b"x"],
            State.COMPLETED,
        )
        await again.stop()

    run(body)


def test_drain_ends_worker_streams_at_once() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        await runtime.drain()
        await settle()
        assert worker.ended is not None
        assert "shutting down" in str(worker.ended)
        with pytest.raises(ServingUnavailableError, match="shutting down"):
            worker.send(WorkerInput(credits=1))
        await runtime.stop()

    run(body)


def test_lifted_config_admits_every_record() -> None:
    config = tenants_config(rate=RateLimit(requests_per_s=1.0), max_queued=0)
    records = [
        SubmitRecord(f"r{i}", tenant, 5, 1, 1, "", "chatbot", f"req-r{i}", 0, None, 0.0)
        for i, tenant in enumerate(["acme", "acme", "gone"])
    ]
    out = lifted(config, records)
    assert out.tenants["acme"].rate is None
    assert out.tenants["acme"].max_queued >= 3
    assert out.tenants["acme"].max_priority == 5
    assert out.tenants["gone"].max_priority == 5
    assert out.shed_queue_fraction == 1.0


def test_a_reload_keeps_what_is_queued_and_applies_new_limits() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        queued = [await runtime.submit("acme", SubmitSpec(priority=2), b"p") for _ in range(3)]
        stricter = tenants_config(max_queued=3)
        runtime.update_config(
            replace(
                stricter,
                tenants=MappingProxyType(
                    {**stricter.tenants, "acme": replace(stricter.tenants["acme"], max_priority=1)}
                ),
            )
        )
        assert runtime.stats().policy.queued == 3
        for request in queued:
            assert runtime.status("acme", request.request_id).state == State.QUEUED
        with pytest.raises(RefusedError) as full:
            await runtime.submit("acme", SubmitSpec(), b"q")
        assert full.value.refusal.reason == "tenant_queue_full"
        assert (await runtime.submit("beta", SubmitSpec(priority=0), b"r")).priority == 0
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        await worker.grant()
        later = await runtime.submit("acme", SubmitSpec(priority=2), b"s")
        assert later.priority == 1  # the new cap
        await runtime.stop()

    run(body)


# ------------------------------------------------- finished requests' status


def test_a_finished_requests_status_survives_a_crash_as_it_was() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime()
        await runtime.start()
        submitted, worker, grant = await one_granted(runtime)
        worker.chunks(grant, b"x", b"y")
        worker.complete(grant, output_tokens=7)
        cancelled = await runtime.submit("acme", SubmitSpec(session="c"), b"q")
        await runtime.cancel("acme", cancelled.request_id)
        await settle()
        done = runtime.status("acme", submitted.request_id)
        assert (done.state, done.worker_id, done.chunks) == (State.COMPLETED, "w1", 2)
        assert (done.input_tokens, done.output_tokens, done.attempts) == (5, 7, 1)
        gone = runtime.status("acme", cancelled.request_id)
        # A crash: the records below the restart point are trimmed, which is
        # why the final states need a journal of their own.
        await advance(clock, 1.2)
        assert store.data.committed == len(store.data.queue(("", "requests", "")))
        again, _, _ = make_runtime(store.reopen(), clock=VirtualClock(clock.now() + 50))
        await again.start()
        assert again.status("acme", submitted.request_id) == done
        assert again.status("acme", cancelled.request_id) == gone
        # Cancel answers as for any finished request; another tenant sees nothing.
        assert await again.cancel("acme", submitted.request_id) == (False, done)
        with pytest.raises(RequestNotFoundError, match=submitted.request_id):
            again.status("beta", submitted.request_id)
        with pytest.raises(RequestNotFoundError, match="'1-99'"):
            again.status("acme", "1-99")
        await again.stop()
        # And a second restart, after a clean stop, still knows them.
        third, _, _ = make_runtime(store.reopen())
        await third.start()
        assert third.status("acme", submitted.request_id) == done
        await third.stop()

    run(body)


def test_finished_requests_are_remembered_across_restarts_within_finished_capacity() -> None:
    async def body() -> None:
        options = RuntimeOptions(lease_s=5.0, finished_capacity=2)
        runtime, store, _ = make_runtime(options=options)
        await runtime.start()
        ids = []
        for i in range(3):
            submitted = await runtime.submit("acme", SubmitSpec(session=f"s{i}"), b"p")
            await runtime.cancel("acme", submitted.request_id)
            ids.append(submitted.request_id)
        with pytest.raises(RequestNotFoundError):
            runtime.status("acme", ids[0])  # the live server's bound: the oldest went
        await runtime.stop()
        again, _, _ = make_runtime(store.reopen(), options=options)
        await again.start()
        with pytest.raises(RequestNotFoundError, match=ids[0]):
            again.status("acme", ids[0])  # the same bound after the restart
        for rid in ids[1:]:
            assert again.status("acme", rid).state == State.CANCELLED
        await again.stop()

    run(body)


def test_the_finished_journal_is_compacted_and_still_read_back() -> None:
    async def body() -> None:
        options = RuntimeOptions(lease_s=5.0, finished_capacity=3, finished_compact_s=2.0)
        runtime, store, clock = make_runtime(options=options)
        await runtime.start()
        ids = []
        for i in range(5):
            submitted = await runtime.submit("acme", SubmitSpec(session=f"s{i}"), b"p")
            await runtime.cancel("acme", submitted.request_id)
            ids.append(submitted.request_id)
        journal = store.data.queue(("", "finished", ""))
        assert len(journal) == 5  # one entry per finished request
        await advance(clock, 0.1)
        # finished_capacity entries are enough to compact at once: one snapshot
        # of the last three; the entries below it are dropped.
        assert store.data.finished_from == 5
        assert journal[-1].properties["kind"] == "finished-snapshot"
        late = await runtime.submit("acme", SubmitSpec(session="late"), b"p")
        await runtime.cancel("acme", late.request_id)
        await advance(clock, 1.0)
        assert store.data.finished_from == 5  # one new entry: waits for finished_compact_s
        await advance(clock, 1.5)
        assert store.data.finished_from == 7
        later = await runtime.submit("acme", SubmitSpec(session="later"), b"p")
        await runtime.cancel("acme", later.request_id)
        await advance(clock, 2.1)
        assert store.data.finished_from == 9
        # Nothing new, but a snapshot pins the log written after it: it is rewritten.
        await advance(clock, 2.1)
        assert store.data.finished_from == 10
        assert len(journal) == 11
        again, _, _ = make_runtime(store.reopen(), options=options)
        await again.start()
        for rid in ids[:3]:
            with pytest.raises(RequestNotFoundError):
                again.status("acme", rid)
        for rid in (ids[4], late.request_id, later.request_id):
            assert again.status("acme", rid).state == State.CANCELLED
        with pytest.raises(RequestNotFoundError):
            again.status("acme", ids[3])  # the fourth-last: past finished_capacity
        await again.stop()

    run(body)


def test_a_final_view_stored_without_its_done_record_ends_the_request_as_it_was() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime()
        await runtime.start()
        submitted, worker, grant = await one_granted(runtime)
        worker.chunks(grant, b"x")
        worker.complete(grant, output_tokens=4)
        await settle()
        view = runtime.status("acme", submitted.request_id)
        assert (view.state, view.worker_id, view.output_tokens) == (State.COMPLETED, "w1", 4)
        # A crash tore the write's last record off: the end mark and the final
        # view are stored, the done record is not (nor was the restart point moved).
        requests = store.data.queue(("", "requests", ""))
        assert requests[-1].properties.get("kind") == "done"
        del requests[-1]
        assert store.data.committed == 0
        again, _, _ = make_runtime(store.reopen(), clock=VirtualClock(clock.now() + 50))
        await again.start()
        # Its final view was stored after its end mark: it ended, as it was; it
        # is not queued again to wait for a worker that would only find its end.
        await settle()
        assert again.status("acme", submitted.request_id) == view
        stats = again.stats()
        assert (stats.policy.queued, stats.counters.get("restored", 0)) == (0, 0)
        assert requests[-1].properties.get("kind") == "done"  # its done record, now
        back = FakeWorker(again, "w1")
        back.credit(1)
        await settle()
        assert back.inbox == []
        await again.stop()
        third, _, _ = make_runtime(store.reopen())
        await third.start()
        assert third.status("acme", submitted.request_id) == view
        assert third.stats().counters.get("restored", 0) == 0
        await third.stop()

    run(body)
