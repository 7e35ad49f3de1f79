"""The lease loop against an in-memory Lease stream and a scripted backend (virtual clock)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from scheduler.clock import VirtualClock
from tidegate.client import (
    Completion,
    Failed,
    HeldLease,
    LeaseRejected,
    LeaseSettled,
    LeaseStop,
    Retry,
    Stopped,
)
from workers.engine_metrics import EngineSignals
from workers.errors import BackendFailedError, BackendRejectedError, WorkerConfigError
from workers.probe import GpuReading, ScriptedProbe
from workers.worker import Worker, WorkerConfig

from .fakes import (
    BREAK,
    Connector,
    ScriptedBackend,
    first_link_running,
    grant,
    jump_until,
    reconnected,
)

Body = Callable[[Worker, Connector, ScriptedBackend, VirtualClock], Awaitable[None]]


def run(
    body: Body,
    backend: ScriptedBackend | None = None,
    *,
    capacity: int = 4,
    probe: ScriptedProbe | None = None,
    keep_runs: bool = True,
    reconnect: Retry | None = None,
) -> Worker:
    async def main() -> Worker:
        clock = VirtualClock()
        connector = Connector()
        engine = backend or ScriptedBackend()
        config = WorkerConfig("w1", capacity=capacity, feedback_interval_s=1.0, keep_runs=keep_runs)
        if reconnect is not None:
            config = dataclasses.replace(config, reconnect=reconnect)
        worker = Worker(
            config,
            engine,
            connector,
            clock=clock,
            probe=probe,
        )
        task = asyncio.create_task(worker.run())
        try:
            await body(worker, connector, engine, clock)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 5.0)
        return worker

    return asyncio.run(main())


def test_hello_gives_the_capacity_as_credits_and_a_grant_streams_in_order() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await c.link(0)
        assert (link.hello.worker_id, link.hello.capacity, link.credits) == ("w1", 4, 4)
        assert link.hello.backend == "scripted"
        link.push(grant("r1"))
        await link.until(lambda ln: bool(ln.completions))
        assert link.chunks("r1") == [(0, b"w0 "), (1, b"w1 "), (2, b"w2 ")]
        assert [p.request_id for r in link.reports for p in r.first_tokens] == ["r1"]
        assert link.completions == [Completion("r1", 1, 7, 3, "length")]
        assert link.credits_back == 1
        request = b.requests[0]
        assert (request.prompt, request.max_tokens, request.input_tokens_hint) == ("prompt", 10, 7)

    worker = run(body)
    assert (worker.stats.granted, worker.stats.completed, worker.stats.chunks) == (1, 1, 3)


def test_a_resumed_grant_continues_after_the_stored_output() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await c.link(0)
        # A lost worker's request: three chunks stored, the tokens unknown to the server.
        link.push(grant("r1", 9, next_chunk=3, resume_output=b"w0 w1 w2 "))
        await link.until(lambda ln: bool(ln.completions))
        assert [i for i, _ in link.chunks("r1")] == [3, 4, 5]
        request = b.requests[0]
        assert (request.resume_text, request.resume_tokens) == ("w0 w1 w2 ", 3)
        assert link.chunks("r1")[0] == (3, b"w3 ")
        assert link.completions == [Completion("r1", 9, 7, 6, "length")]

    run(body)


def test_a_preempted_run_stops_and_reports_its_cumulative_tokens() -> None:
    backend = ScriptedBackend(words=2)
    backend.gate.clear()  # it makes two tokens, then holds

    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await c.link(0)
        link.push(grant("r1", 5, next_chunk=4, done_output_tokens=4, resume_output=b"abcd"))
        await link.until(lambda ln: len(ln.chunks("r1")) == 2)
        link.push(LeaseStop("r1", 5, "preempt"))
        await link.until(lambda ln: bool(ln.stopped))
        assert link.stopped == [Stopped("r1", 5, 6)]  # 4 before + 2 in this run
        assert link.completions == []
        assert link.credits_back == 1
        assert b.cancelled == ["r1"]

    worker = run(body, backend)
    assert worker.stats.preempted == 1


def test_a_cancel_order_or_a_fenced_lease_gives_only_the_credit_back() -> None:
    backend = ScriptedBackend(words=1)
    backend.gate.clear()

    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await c.link(0)
        link.push(grant("r1", 1))
        link.push(grant("r2", 2))
        await link.until(lambda ln: bool(ln.chunks("r1")) and bool(ln.chunks("r2")))
        link.push(LeaseStop("r1", 1, "cancel"))
        link.push(LeaseStop("r2", 99, "cancel"))  # another lease's order: not this run
        link.push(LeaseRejected("r2", 2, "FAILED_PRECONDITION", "lease gone"))
        await link.until(lambda ln: ln.credits_back == 2)
        assert (link.stopped, link.completions, link.failed) == ([], [], [])
        assert sorted(b.cancelled) == ["r1", "r2"]

    worker = run(body, backend)
    assert (worker.stats.cancelled, worker.stats.fenced) == (1, 1)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [(BackendRejectedError("bad request", 422), False), (BackendFailedError("engine died"), True)],
)
def test_backend_errors_are_reported_as_failed(error: Exception, retryable: bool) -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await c.link(0)
        link.push(grant("r1", 3))
        await link.until(lambda ln: bool(ln.failed))
        (failed,) = link.failed
        assert isinstance(failed, Failed)
        assert (failed.request_id, failed.lease_id, failed.retryable) == ("r1", 3, retryable)
        assert link.credits_back == 1

    run(body, ScriptedBackend(fail_with=error))


def test_a_grant_with_a_bad_property_fails_for_good() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await c.link(0)
        link.push(grant("r1", properties={"temperature": "hot"}))
        await link.until(lambda ln: bool(ln.failed))
        (failed,) = link.failed
        assert isinstance(failed, Failed)
        assert not failed.retryable
        assert "temperature" in failed.message
        assert b.requests == []

    run(body)


def test_without_keep_runs_a_broken_stream_abandons_its_runs_and_the_worker_reconnects() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await first_link_running(c)
        first.push(BREAK)
        while len(c.links) < 2:  # the backoff sleeps on the virtual clock
            await asyncio.sleep(0)
            deadline = clock.next_deadline()
            if deadline is not None:
                clock.jump(deadline)
        second = c.links[1]
        assert first.closed
        assert b.cancelled == ["r1"]
        assert second.credits == 4  # a fresh stream: the whole capacity again
        # Nothing about r1 was reported after the break: its lease died with the stream.
        assert (first.completions, first.stopped, first.failed) == ([], [], [])
        b.gate.set()
        second.push(grant("r1", 2, next_chunk=1, resume_output=b"w0 "))
        await second.until(lambda ln: bool(ln.completions))
        assert second.chunks("r1") == [(1, b"w1 ")]
        assert (second.hello.held, second.hello.keeps_leases) == ((), False)

    worker = run(body, ScriptedBackend(words=1, hold=True), keep_runs=False)
    assert worker.stats.connects == 2


def test_a_broken_stream_keeps_its_runs_and_the_new_hello_names_them() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await c.link(0)
        assert first.hello.keeps_leases
        first.push(grant("r1", 1))
        first.push(grant("r2", 2))
        await first.until(lambda ln: len(ln.chunks("r1")) == 2 and len(ln.chunks("r2")) == 2)
        first.push(BREAK)
        second = await reconnected(c, clock, 2)
        assert b.cancelled == []  # the runs went on
        assert second.hello.held == (HeldLease("r1", 1), HeldLease("r2", 2))
        assert second.credits == 2  # its capacity less the two runs it holds
        second.push(LeaseStop("r2", 2, "cancel"))  # the server no longer holds r2's lease
        # Everything r1 made comes again (whatever went before the break may be
        # lost; the server drops what it stored), then its completion.
        await second.until(lambda ln: ln.credits_back == 1)
        assert b.cancelled == ["r2"]
        b.gate.set()
        await second.until(lambda ln: bool(ln.completions))
        assert second.chunks("r1") == [(0, b"w0 "), (1, b"w1 ")]
        assert second.completions == [Completion("r1", 1, 7, 2, "length")]
        assert second.credits_back == 2

    worker = run(body, ScriptedBackend(words=2, hold=True))
    assert (worker.stats.connects, worker.stats.completed, worker.stats.cancelled) == (2, 1, 1)


def test_an_ending_no_stream_took_goes_out_after_the_reconnect() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await first_link_running(c)
        first.push(BREAK)
        await asyncio.sleep(0)
        b.gate.set()  # it finishes while no stream is open
        second = await reconnected(c, clock, 2)
        assert second.hello.held == (HeldLease("r1", 1),)
        assert second.credits == 4  # nothing runs any more
        await second.until(lambda ln: bool(ln.completions))
        assert second.chunks("r1") == [(0, b"w0 ")]
        assert second.completions == [Completion("r1", 1, 7, 1, "length")]
        assert second.credits_back == 0  # its slot was in the hello's credits

    run(body, ScriptedBackend(words=1, hold=True))


def test_a_completion_sent_before_the_break_is_named_and_sent_again_until_settled() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await c.link(0)
        first.push(grant("r1", 1))
        first.push(grant("r2", 2))
        await first.until(lambda ln: len(ln.completions) == 2)
        first.push(LeaseSettled("r2", 2))  # r2's answer came; r1's died with the stream
        await asyncio.sleep(0)
        first.push(BREAK)
        second = await reconnected(c, clock, 2)
        # The completion may have been lost with the stream: if the server never
        # read it, it would run the request again once the lease is released.
        assert second.hello.held == (HeldLease("r1", 1),)
        assert second.credits == 4  # nothing runs
        await second.until(lambda ln: bool(ln.completions))
        assert second.chunks("r1") == [(0, b"w0 "), (1, b"w1 "), (2, b"w2 ")]
        assert second.completions == [Completion("r1", 1, 7, 3, "length")]
        # Named again after every break until the server answers it.
        second.push(BREAK)
        third = await reconnected(c, clock, 3)
        assert third.hello.held == (HeldLease("r1", 1),)
        await third.until(lambda ln: bool(ln.completions))
        third.push(LeaseSettled("r1", 1))
        await asyncio.sleep(0)
        third.push(BREAK)
        fourth = await reconnected(c, clock, 4)
        assert fourth.hello.held == ()

    worker = run(body)
    assert worker.stats.completed == 2  # one run each, whatever was sent again


def test_a_completed_run_is_named_until_a_cancel_or_a_rejection_not_a_preempt_order() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await c.link(0)
        for rid, lease in (("r1", 1), ("r2", 2), ("r3", 3)):
            first.push(grant(rid, lease))
        await first.until(lambda ln: len(ln.completions) == 3)
        # A preempt order that crossed the completion: the completion answers it.
        first.push(LeaseStop("r1", 1, "preempt"))
        first.push(LeaseStop("r2", 2, "cancel"))  # the server is done with these
        first.push(LeaseRejected("r3", 3, "FAILED_PRECONDITION", "lease gone"))
        await asyncio.sleep(0)
        first.push(BREAK)
        second = await reconnected(c, clock, 2)
        assert second.hello.held == (HeldLease("r1", 1),)

    run(body)


def test_kept_runs_are_abandoned_once_lease_s_passed_without_a_reconnect() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await first_link_running(c)
        c.fail = 100  # from now on the server is out of reach
        first.push(BREAK)
        while not b.cancelled:
            await asyncio.sleep(0)
            deadline = clock.next_deadline()
            if deadline is not None:
                clock.jump(deadline)
        assert clock.now() > first.opened.lease_s
        c.fail = 0
        second = await reconnected(c, clock, 2)
        assert second.hello.held == ()
        assert second.credits == 4

    run(body, ScriptedBackend(words=1, hold=True))


def test_kept_runs_are_abandoned_when_lease_s_ends_even_in_the_middle_of_a_backoff() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await first_link_running(c)
        c.fail = 100  # the server is out of reach
        first.push(BREAK)
        broke = clock.now()
        # Tries at +4 s and +12 s: the server put r1 back in the queue at +10 s,
        # so the run must stop then, not at the next try.
        assert await jump_until(lambda: bool(b.cancelled), clock) - broke <= first.opened.lease_s
        c.fail = 0
        await jump_until(lambda: len(c.links) == 2, clock)
        assert c.links[1].hello.held == ()

    run(
        body,
        ScriptedBackend(words=1, hold=True),
        reconnect=Retry(initial_s=4.0, max_s=8.0, jitter=0.0, give_up_s=None),
    )


def test_kept_runs_are_abandoned_when_lease_s_ends_while_a_connect_hangs() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        first = await first_link_running(c)
        c.hang = asyncio.Event()  # the server takes the connection and never answers
        first.push(BREAK)
        broke = clock.now()
        assert await jump_until(lambda: bool(b.cancelled), clock) - broke <= first.opened.lease_s
        assert c.hung  # it was given up; the next try names nothing any more
        await jump_until(lambda: c.hung[-1].held == (), clock)
        c.hang.set()
        await jump_until(lambda: len(c.links) == 2, clock)
        assert c.links[1].hello.held == ()

    run(body, ScriptedBackend(words=1, hold=True))


def test_a_stopping_worker_says_it_is_leaving() -> None:
    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await first_link_running(c)
        w.stop()
        await link.until(lambda ln: ln.reports[-1].leaving)
        assert b.cancelled == ["r1"]

    run(body, ScriptedBackend(words=1, hold=True))


def test_feedback_every_interval_carries_probe_engine_and_latency() -> None:
    probe = ScriptedProbe([GpuReading(0, 0.0, utilisation=0.5, memory_used=0.9)])
    backend = ScriptedBackend(signals=EngineSignals(queue_depth=2, running=3))

    async def body(w: Worker, c: Connector, b: ScriptedBackend, clock: VirtualClock) -> None:
        link = await c.link(0)
        link.push(grant("r1"))
        await link.until(lambda ln: bool(ln.completions))
        clock.advance(1.0)
        await link.until(lambda ln: bool(ln.feedback))
        (fb,) = link.feedback
        assert (fb.gpu_util, fb.gpu_mem, fb.queue_depth) == (0.5, 0.9, 2)
        assert fb.ttft_s == 0.0  # the virtual clock stood still while it streamed
        b._signals = EngineSignals(kv_usage=0.4)
        clock.advance(1.0)
        await link.until(lambda ln: len(ln.feedback) == 2)
        second = link.feedback[1]
        # An engine that reports KV use reserved its memory: NVML's figure is left out.
        assert (second.kv_usage, second.gpu_mem) == (0.4, None)

    worker = run(body, backend, probe=probe)
    assert worker.stats.feedback_sent == 2


def test_a_server_it_cannot_reach_is_retried_with_backoff() -> None:
    async def main() -> None:
        clock = VirtualClock()
        connector = Connector(fail=3)
        worker = Worker(WorkerConfig("w1"), ScriptedBackend(), connector, clock=clock)
        task = asyncio.create_task(worker.run())
        waits = []
        while not connector.links:
            await asyncio.sleep(0)
            deadline = clock.next_deadline()
            if deadline is not None:
                waits.append(deadline - clock.now())
                clock.jump(deadline)
        worker.stop()
        await asyncio.wait_for(task, 5.0)
        assert len(waits) == 3
        assert waits[0] <= 0.1 < waits[2] * 4  # growing, jittered

    asyncio.run(main())


def test_chunks_larger_than_the_server_takes_are_split_in_order() -> None:
    async def main() -> None:
        clock = VirtualClock()
        connector = Connector(max_chunk_bytes=2)
        worker = Worker(WorkerConfig("w1"), ScriptedBackend(words=2), connector, clock=clock)
        task = asyncio.create_task(worker.run())
        link = await connector.link(0)
        link.push(grant("r1"))
        await link.until(lambda ln: bool(ln.completions))
        worker.stop()
        await asyncio.wait_for(task, 5.0)
        assert link.chunks("r1") == [(0, b"w0"), (1, b" "), (2, b"w1"), (3, b" ")]
        tokens = [c.tokens for r in link.reports for c in r.chunks]
        assert tokens == [1, 0, 1, 0]

    asyncio.run(main())


def test_a_busy_stream_packs_what_comes_within_the_send_interval_into_one_message() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        connector = Connector()
        config = WorkerConfig("w1", send_interval_s=0.2)
        worker = Worker(config, ScriptedBackend(words=3), connector, clock=VirtualClock())
        task = asyncio.create_task(worker.run())
        link = await connector.link(0)
        pushed = loop.time()
        link.push(grant("r1"))
        await link.until(lambda ln: bool(ln.reports))
        first = loop.time()
        await link.until(lambda ln: bool(ln.completions))
        second = loop.time()
        worker.stop()
        await asyncio.wait_for(task, 5.0)
        # An idle stream sends at once; what came after waits out the interval
        # and shares one message, the ending after its chunks.
        assert first - pushed < 0.15
        assert second - first >= 0.15
        assert [c.index for r in link.reports for c in r.chunks] == [0, 1, 2]
        assert link.reports[0].chunks  # the first chunk did not wait
        # (Then a 'leaving': stopped before the server settled the completion.)
        assert [len(r.completions) for r in link.reports if not r.leaving] == [0, 1]
        assert worker.stats.reports == 2

    asyncio.run(main())


def test_a_negative_send_interval_is_refused() -> None:
    with pytest.raises(WorkerConfigError, match="send_interval_s"):
        WorkerConfig("w1", send_interval_s=-0.1)
