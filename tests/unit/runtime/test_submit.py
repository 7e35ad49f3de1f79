"""Submit, status, cancel and deadlines on a virtual clock over the in-memory store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scheduler.runtime import GrantOut, RuntimeOptions, State, StopOut, SubmitSpec, WorkerHello
from scheduler.runtime.errors import (
    InvalidFieldError,
    RefusedError,
    RequestNotFoundError,
    RoleDeniedError,
    ServingUnavailableError,
    StaleLeaseError,
)
from scheduler.runtime.records import parse_record
from scheduler.types import RateLimit, RefusalReason
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


def test_a_request_runs_and_its_reply_is_one_ordered_stream() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        submitted = await runtime.submit("acme", SubmitSpec(session="s-1"), b"hello world!")
        assert (submitted.reply_topic, submitted.reply_lite_topic) == ("chatbot", "s-1")
        assert submitted.reply_offset == 0
        assert runtime.status("acme", submitted.request_id).state == State.QUEUED

        worker = FakeWorker(runtime, "w1")
        worker.credit(4)
        grant = await worker.grant()
        assert grant.request_id == submitted.request_id
        assert grant.payload == b"hello world!"
        assert (grant.next_chunk, grant.resume_output, grant.attempt) == (0, b"", 1)
        assert grant.input_tokens == 3  # 12 bytes at 4 bytes a token
        status = runtime.status("acme", submitted.request_id)
        assert (status.state, status.worker_id) == (State.RUNNING, "w1")

        worker.chunks(grant, b"Hel", b"lo")
        worker.complete(grant, output_tokens=2)
        await settle()
        assert [type(x).__name__ for x in await worker.drain()] == ["SettledOut"]
        messages = reply(store, "acme", "chatbot", "s-1")
        assert stream_of(messages, grant.request_id) == ([b"Hel", b"lo"], State.COMPLETED)
        end = messages[-1].properties
        assert end["tidegate.input_tokens"] == "5"
        assert end["tidegate.output_tokens"] == "2"
        assert end["tidegate.finish_reason"] == "stop"
        final = runtime.status("acme", submitted.request_id)
        assert (final.state, final.chunks, final.output_tokens) == (State.COMPLETED, 2, 2)
        kinds = [parse_record(m.properties) for m in store.data.queue(("", "requests", ""))]
        assert [type(k).__name__ for k in kinds] == ["SubmitRecord", "DoneRecord"]
        stats = runtime.stats()
        assert stats.policy.completed == 1
        assert stats.counters["chunks"] == 2
        await runtime.stop()

    run(body)


def test_without_a_session_the_reply_has_its_own_lite_topic() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        submitted = await runtime.submit("acme", SubmitSpec(reply_topic="a2a"), b"x")
        assert submitted.reply_topic == "a2a"
        assert submitted.reply_lite_topic == f"req-{submitted.request_id}"
        await runtime.stop()

    run(body)


def test_refusals_carry_the_reason_and_a_retry_after() -> None:
    async def body() -> None:
        config = tenants_config(rate=RateLimit(requests_per_s=1.0, burst_s=1.0))
        runtime, store, _ = make_runtime(config=config)
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"a")
        with pytest.raises(RefusedError) as caught:
            await runtime.submit("acme", SubmitSpec(), b"b")
        refusal = caught.value.refusal
        assert refusal.reason == RefusalReason.RATE_REQUESTS
        assert 0 < refusal.retry_after_s <= 1.0
        # A refusal writes nothing.
        assert len(store.data.queue(("", "requests", ""))) == 1
        with pytest.raises(RefusedError) as unknown:
            await runtime.submit("nobody", SubmitSpec(), b"c")
        assert unknown.value.refusal.reason == RefusalReason.UNKNOWN_TENANT
        assert runtime.stats().counters["refused"] == 2
        await runtime.stop()

    run(body)


def test_priority_is_capped_to_the_tenant_maximum() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        high = await runtime.submit("acme", SubmitSpec(priority=9), b"a")
        assert high.priority == 2
        low = await runtime.submit("beta", SubmitSpec(priority=-3), b"b")
        assert low.priority == -3
        await runtime.stop()

    run(body)


def test_roles_and_fields_are_checked() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        with pytest.raises(RoleDeniedError, match="worker tenant"):
            await runtime.submit("fleet", SubmitSpec(), b"a")
        with pytest.raises(RoleDeniedError, match="role: worker"):
            runtime.attach("acme", WorkerHello("w"))
        for bad, match in (
            (SubmitSpec(session="a/b"), "session_id"),
            (SubmitSpec(session="req-1"), "kept for"),
            (SubmitSpec(reply_topic="bad topic"), "reply_topic"),
            (SubmitSpec(deadline_s=-1.0), "deadline_s"),
            (SubmitSpec(properties={"tidegate.x": "1"}), "reserved"),
        ):
            with pytest.raises(InvalidFieldError, match=match):
                await runtime.submit("acme", bad, b"a")
        assert runtime.stats().policy.admitted == 0
        await runtime.stop()

    run(body)


def test_a_grant_waits_until_the_request_is_on_disk() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        store.gate = asyncio.Event()
        submitting = asyncio.ensure_future(runtime.submit("acme", SubmitSpec(), b"p"))
        await settle()
        assert runtime.stats().policy.in_flight == 1  # dispatched at once ...
        assert await worker.drain() == []  # ... but not granted before it is stored
        assert not submitting.done()
        store.gate.set()
        submitted = await submitting
        grant = await worker.grant()
        assert grant.request_id == submitted.request_id
        await runtime.stop()

    run(body)


def test_a_submit_the_store_fails_leaves_nothing_behind() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        store.broken = True
        with pytest.raises(ServingUnavailableError):
            await runtime.submit("acme", SubmitSpec(), b"p")
        await settle()
        stats = runtime.stats()
        assert (stats.policy.queued, stats.policy.in_flight, stats.live_requests) == (0, 0, 0)
        assert await worker.drain() == []
        store.broken = False
        ok = await runtime.submit("acme", SubmitSpec(), b"q")
        grant = await worker.grant()  # the credit the lost grant took came back
        assert grant.request_id == ok.request_id
        await runtime.stop()

    run(body)


def test_cancel_of_a_queued_request_ends_its_stream() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        submitted = await runtime.submit("acme", SubmitSpec(session="s"), b"p")
        with pytest.raises(RequestNotFoundError):
            await runtime.cancel("beta", submitted.request_id)  # another tenant's
        cancelled, view = await runtime.cancel("acme", submitted.request_id)
        assert cancelled
        assert view.state == State.CANCELLED
        assert stream_of(reply(store, "acme", "chatbot", "s"), submitted.request_id) == (
            [],
            State.CANCELLED,
        )
        again, view = await runtime.cancel("acme", submitted.request_id)
        assert not again
        assert view.state == State.CANCELLED
        assert runtime.stats().policy.queued == 0
        await runtime.stop()

    run(body)


def test_cancel_of_a_running_request_stops_its_worker_and_fences_it() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        submitted, worker, grant = await one_granted(runtime)
        worker.chunks(grant, b"a")
        await settle()
        cancelled, _ = await runtime.cancel("acme", submitted.request_id)
        assert cancelled
        assert await worker.drain() == [StopOut(grant.request_id, grant.lease_id, "cancel")]
        worker.chunks(grant, b"late", start=1)
        worker.complete(grant)
        await worker.drain()
        assert [type(r.error) for r in worker.rejections()] == [StaleLeaseError] * 2
        assert stream_of(reply(store, "acme", "chatbot", "s"), grant.request_id) == (
            [b"a"],
            State.CANCELLED,
        )
        await runtime.stop()

    run(body)


def test_a_queued_request_past_its_deadline_is_dropped() -> None:
    async def body() -> None:
        runtime, store, clock = make_runtime()
        await runtime.start()
        submitted = await runtime.submit("acme", SubmitSpec(session="s", deadline_s=1.0), b"p")
        kept = await runtime.submit("acme", SubmitSpec(session="t"), b"q")
        await advance(clock, 1.5)
        assert runtime.status("acme", submitted.request_id).state == State.DROPPED
        assert stream_of(reply(store, "acme", "chatbot", "s"), submitted.request_id) == (
            [],
            State.DROPPED,
        )
        assert runtime.status("acme", kept.request_id).state == State.QUEUED
        assert runtime.stats().policy.dropped == {"deadline": 1}
        await runtime.stop()

    run(body)


def test_a_large_payload_reaches_the_worker_in_pieces() -> None:
    async def body() -> None:
        options = RuntimeOptions(inline_bytes=1000, cache_payload_bytes=10)
        runtime, _, _ = make_runtime(options=options)
        await runtime.start()
        payload = bytes(range(256)) * 20

        async def rest() -> AsyncIterator[bytes]:
            yield payload[100:3000]
            yield payload[3000:]

        await runtime.submit("acme", SubmitSpec(), payload[:100], rest())
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        grant = await worker.grant()
        assert isinstance(grant, GrantOut)
        assert grant.payload is None
        assert grant.payload_size == len(payload)
        assert grant.payload_pieces is not None
        assert b"".join([p async for p in grant.payload_pieces]) == payload
        assert grant.input_tokens == 25  # estimated from the first piece
        await runtime.stop()

    run(body)


def test_unknown_requests_are_not_found() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        with pytest.raises(RequestNotFoundError, match="'nope'"):
            runtime.status("acme", "nope")
        await runtime.stop()
        with pytest.raises(ServingUnavailableError):
            await runtime.submit("acme", SubmitSpec(), b"x")

    run(body)


def test_concurrent_submits_share_one_durable_write() -> None:
    async def body() -> None:
        runtime, store, _ = make_runtime()
        await runtime.start()
        store.gate = asyncio.Event()
        first = asyncio.ensure_future(runtime.submit("acme", SubmitSpec(), b"0"))
        await settle()  # its write is under way (held at the gate) ...
        rest = [
            asyncio.ensure_future(runtime.submit("acme", SubmitSpec(), b"%d" % i))
            for i in range(1, 6)
        ]
        await settle()  # ... and these gather behind it
        store.gate.set()
        done = await asyncio.gather(first, *rest)
        assert store.submit_writes == 2
        requests = store.data.queue(("", "requests", ""))
        assert [m.body for m in requests] == [b"%d" % i for i in range(6)]
        assert [d.request_id for d in done] == [m.properties["id"] for m in requests]
        await runtime.stop()

    run(body)
