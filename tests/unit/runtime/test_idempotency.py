"""Idempotent Submit: a resent key gets the first request back, never a second run;
the keys' bounds (time after admission, count of finished requests), and restarts.

Plus the worker a finished request keeps in its status."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.clock import VirtualClock
from scheduler.runtime import GrantOut, RuntimeOptions, State, SubmitSpec, Submitted, WorkerInput
from scheduler.runtime.errors import InvalidFieldError, RefusedError, ServingUnavailableError
from scheduler.runtime.idempotency import IdempotencyKeys, Remembered
from scheduler.runtime.records import SubmitRecord, parse_record, submit_properties
from scheduler.types import RateLimit
from tests.unit.runtime.support import (
    FakeWorker,
    advance,
    make_runtime,
    one_granted,
    run,
    settle,
    tenants_config,
    within,
)


def keyed(key: str, **kwargs: object) -> SubmitSpec:
    return SubmitSpec(idempotency_key=key, **kwargs)  # type: ignore[arg-type]


def options(**kwargs: object) -> RuntimeOptions:
    return RuntimeOptions(lease_s=5.0, commit_interval_s=1.0, **kwargs)  # type: ignore[arg-type]


def same_request(first: Submitted, again: Submitted) -> None:
    assert again.duplicate
    assert not first.duplicate
    assert (
        again.request_id,
        again.reply_topic,
        again.reply_lite_topic,
        again.reply_offset,
        again.priority,
        again.admitted_at,
    ) == (
        first.request_id,
        first.reply_topic,
        first.reply_lite_topic,
        first.reply_offset,
        first.priority,
        first.admitted_at,
    )


# ---------------------------------------------------------------- the table


def _record(rid: str, key: str, admitted_at: float, tenant: str = "acme") -> SubmitRecord:
    return SubmitRecord(
        rid, tenant, 0, 1, 1, "", "chatbot", f"req-{rid}", 0, None, admitted_at, {}, key
    )


def test_the_table_keeps_finished_keys_by_time_and_count() -> None:
    keys = IdempotencyKeys(ttl_s=10.0, max_keys=2)
    keys.admit("acme", "k1", "r1")
    assert keys.find("acme", "k1", 1e9) == "r1"  # live: whatever its age
    assert keys.find("beta", "k1", 0.0) is None  # keys are per tenant
    assert keys.finished(_record("r1", "k1", 100.0), 7, 101.0) == []
    found = keys.find("acme", "k1", 105.0)
    assert isinstance(found, Remembered)
    assert (found.answer.request_id, found.answer.duplicate, found.offset) == ("r1", True, 7)
    assert keys.find("acme", "k1", 110.0) is None  # 10 s after admission
    # Count: a third finished key pushes out the oldest-finished.
    keys.finished(_record("r2", "k2", 104.0), 8, 105.0)
    assert keys.finished(_record("r3", "k3", 104.0), 9, 105.0) == [7]
    assert len(keys) == 2
    # Expired ones go from the front, their offsets freed for the restart point.
    assert keys.prune(113.9) == []
    assert keys.prune(114.0) == [8, 9]
    # Finished already past its time, or never stored: not kept.
    keys.admit("acme", "k4", "r4")
    assert keys.finished(_record("r4", "k4", 100.0), 10, 200.0) == [10]
    keys.admit("acme", "k5", "r5")
    assert keys.finished(_record("r5", "k5", 199.0), None, 200.0) == []
    assert len(keys) == 0


def test_the_key_rides_in_the_submit_record() -> None:
    record = _record("r1", "order-17", 5.0)
    assert parse_record(submit_properties(record)) == record
    plain = _record("r2", "", 5.0)
    assert "key" not in submit_properties(plain)
    assert parse_record(submit_properties(plain)) == plain


# --------------------------------------------------------------- the runtime


def test_a_resent_key_gets_the_first_request_back_and_it_runs_once() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        first = await runtime.submit("acme", keyed("k-1", session="s"), b"p")
        again = await runtime.submit("acme", keyed("k-1", session="s"), b"p")
        same_request(first, again)
        # Another tenant's same key, and another key, are other requests.
        other = await runtime.submit("beta", keyed("k-1"), b"p")
        assert other.request_id != first.request_id
        assert not other.duplicate
        assert runtime.stats().live_requests == 2
        worker = FakeWorker(runtime, "w1")
        worker.credit(5)
        grants = [await worker.grant(), await worker.grant()]
        assert sorted(g.request_id for g in grants) == sorted([first.request_id, other.request_id])
        assert await worker.drain() == []
        for grant in grants:
            worker.complete(grant, credits=0)
        await settle()
        # Finished: still the same answer, and still nothing new to run.
        late = await runtime.submit("acme", keyed("k-1", session="s"), b"p")
        same_request(first, late)
        worker.credit(1)
        assert not [item for item in await worker.drain() if isinstance(item, GrantOut)]
        assert runtime.stats().counters["duplicates"] == 2
        await runtime.stop()

    run(body)


def test_a_resend_while_the_first_is_being_written_waits_for_it() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        store.gate = asyncio.Event()
        tries = [asyncio.ensure_future(runtime.submit("acme", keyed("k"), b"p")) for _ in range(3)]
        await settle()
        assert not any(t.done() for t in tries)
        store.gate.set()
        first, *again = await within(asyncio.gather(*tries))
        for answer in again:
            same_request(first, answer)
        assert runtime.stats().live_requests == 1
        await runtime.stop()

    run(body)


def test_a_key_is_forgotten_when_its_submit_failed_or_was_refused() -> None:
    async def body() -> None:
        config = tenants_config(rate=RateLimit(requests_per_s=1.0, burst_s=1.0))
        runtime, store, clock = make_runtime(config=config)
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"p")  # spends the burst
        with pytest.raises(RefusedError):
            await runtime.submit("acme", keyed("k"), b"p")
        await advance(clock, 1.0)
        admitted = await runtime.submit("acme", keyed("k"), b"p")
        assert not admitted.duplicate
        # A write that fails: the first send and a resend waiting on it both fail...
        await advance(clock, 1.0)
        store.gate = asyncio.Event()
        tries = [asyncio.ensure_future(runtime.submit("acme", keyed("f"), b"p")) for _ in "ab"]
        await settle()
        store.broken = True
        store.gate.set()
        results = await within(asyncio.gather(*tries, return_exceptions=True))
        assert all(isinstance(r, ServingUnavailableError) for r in results), results
        assert "idempotency_key 'f'" in str(results[1])
        # ...and the key is free again (a restarted store takes it afresh).
        assert runtime.core.keys.find("acme", "f", runtime.core.wall()) is None
        store.broken = False
        await runtime.stop()

    run(body)


def test_keys_are_remembered_for_the_ttl_after_admission_and_up_to_the_count() -> None:
    async def body() -> None:
        runtime, _, clock = make_runtime(
            options=options(idempotency_ttl_s=30.0, idempotency_max_keys=2)
        )
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        worker.credit(10)
        answers = {}
        for key in ("a", "b", "c"):
            answers[key] = await runtime.submit("acme", keyed(key), b"p")
            worker.complete(await worker.grant(), credits=0)
            await settle()
        # Three finished, two remembered: the oldest went.
        assert not (await runtime.submit("acme", keyed("a"), b"p")).duplicate
        same_request(answers["c"], await runtime.submit("acme", keyed("c"), b"p"))
        await advance(clock, 30.0)
        assert not (await runtime.submit("acme", keyed("c"), b"p")).duplicate
        await runtime.stop()

    run(body)


def test_a_long_running_request_keeps_its_key_while_it_runs() -> None:
    async def body() -> None:
        runtime, _, clock = make_runtime(options=options(idempotency_ttl_s=1.0))
        await runtime.start()
        first = await runtime.submit("acme", keyed("long"), b"p")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        grant = await worker.grant()
        for _ in range(3):
            await advance(clock, 1.0)
            worker.send(WorkerInput())  # a heartbeat: the lease stays
        same_request(first, await runtime.submit("acme", keyed("long"), b"p"))
        worker.complete(grant, credits=0)
        await settle()
        # Finished 3 s after admission with a 1 s ttl: forgotten at once.
        assert not (await runtime.submit("acme", keyed("long"), b"p")).duplicate
        await runtime.stop()

    run(body)


def test_keys_survive_a_restart_and_hold_the_restart_point_only_while_remembered() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime(options=options(idempotency_ttl_s=60.0))
        await runtime.start()
        done = await runtime.submit("acme", keyed("done", session="s"), b"p0")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        worker.complete(await worker.grant(), credits=0)
        await settle()
        queued = await runtime.submit("acme", keyed("queued"), b"p1")
        plain = await runtime.submit("acme", SubmitSpec(), b"p2")
        await advance(clock, 2.0)  # a commit of the restart point
        # The finished keyed request holds the point at its submit record.
        assert store.data.committed == 0
        # A crash; a new process on the same store.
        later = VirtualClock(clock.now() + 10)
        again, _, _ = make_runtime(
            store.reopen(), clock=later, options=options(idempotency_ttl_s=60.0)
        )
        await again.start()
        same_request(done, await again.submit("acme", keyed("done", session="s"), b"p0"))
        same_request(queued, await again.submit("acme", keyed("queued"), b"p1"))
        assert again.stats().live_requests == 2  # queued and plain, nothing more
        back = FakeWorker(again, "w1")
        back.credit(5)
        grants = [await back.grant(), await back.grant()]
        assert {g.request_id for g in grants} == {queued.request_id, plain.request_id}
        assert await back.drain() == []
        for grant in grants:
            back.complete(grant, credits=0)
        # Past the ttl the keys are forgotten and the restart point moves on.
        await settle()
        back.close()
        await advance(later, 61.0)
        assert store.data.committed == len(store.data.queue(("", "requests", "")))
        fresh = await again.submit("acme", keyed("done", session="s"), b"p0")
        assert not fresh.duplicate
        assert fresh.request_id != done.request_id
        await again.stop()

    run(body)


def test_the_key_rule_names_the_field() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        for bad in ("has space", "x" * 129, "slash/no", "é"):
            with pytest.raises(
                InvalidFieldError, match=r"idempotency_key .* breaks the rule 1 to 128"
            ):
                await runtime.submit("acme", keyed(bad), b"p")
        ok = await runtime.submit("acme", keyed("A-z_0.9:@=+" + "x" * 117), b"p")
        assert not ok.duplicate
        await runtime.stop()

    run(body)


# ------------------------------------------------------- the worker it ran on


def test_a_finished_request_keeps_the_worker_that_ran_it() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        submitted, worker, grant = await one_granted(runtime)
        assert runtime.status("acme", submitted.request_id).worker_id == "w1"
        worker.complete(grant, credits=0)
        await settle()
        view = runtime.status("acme", submitted.request_id)
        assert (view.state, view.worker_id) == (State.COMPLETED, "w1")
        # Cancelled while running on w2: w2; dropped while queued: none.
        other = await runtime.submit("acme", SubmitSpec(), b"p")
        w2 = FakeWorker(runtime, "w2")
        w2.credit(1)
        await w2.grant()
        cancelled, view = await runtime.cancel("acme", other.request_id)
        assert cancelled
        assert (view.state, view.worker_id) == (State.CANCELLED, "w2")
        assert runtime.status("acme", other.request_id).worker_id == "w2"
        never = await runtime.submit("acme", SubmitSpec(), b"p")
        _, view = await runtime.cancel("acme", never.request_id)
        assert (view.state, view.worker_id) == (State.CANCELLED, "")
        await runtime.stop()

    run(body)
