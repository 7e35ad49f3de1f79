"""Draining a worker through a DrainGate: a real Worker on an in-memory Lease stream."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from scheduler.clock import VirtualClock
from tidegate.client import Completion, HeldLease, LeaseSettled, LeaseStop
from tidegate.inference_values import LeaseDraining
from workers.drain import DrainGate
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

Body = Callable[[Worker, DrainGate, Connector, ScriptedBackend], Awaitable[None]]
CLOCK = VirtualClock()


def run(body: Body, backend: ScriptedBackend, *, keep_runs: bool = True) -> Worker:
    async def main() -> Worker:
        connector = Connector()
        gate = DrainGate()
        worker = Worker(
            WorkerConfig("w1", capacity=4, feedback_interval_s=1.0, keep_runs=keep_runs),
            backend,
            gate.wrap(connector),
            clock=CLOCK,
        )
        task = asyncio.create_task(worker.run())
        try:
            await body(worker, gate, connector, backend)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 5.0)
        return worker

    return asyncio.run(main())


async def idle(gate: DrainGate) -> None:
    await asyncio.wait_for(gate.idle.wait(), 5.0)


def test_draining_tells_the_server_runs_late_grants_and_is_idle_once_settled() -> None:
    backend = ScriptedBackend(words=2)
    backend.gate.clear()  # the runs go on until the test lets them finish

    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        link = await c.link(0)
        link.push(grant("r1", 1))
        await link.until(lambda ln: len(ln.chunks("r1")) == 2)
        gate.drain(w)
        assert w.draining
        await link.until(lambda ln: any(r.draining for r in ln.reports))
        assert [r.draining for r in link.reports].count(True) == 1
        assert not gate.idle.is_set()
        assert gate.leases == 1

        # A grant the server sent before it read the drain runs like any other;
        # nothing is handed back.
        link.push(grant("r2", 2))
        await link.until(lambda ln: len(ln.chunks("r2")) == 2)
        assert gate.late_grants == 1
        link.push(LeaseDraining())  # the server's answer: no grant follows

        # Both finish: completions go out, credits do not.
        b.gate.set()
        await link.until(lambda ln: len(ln.completions) == 2)
        await asyncio.sleep(0.05)  # let the worker's credit report go out too
        assert link.credits_back == 0
        assert link.stopped == []
        assert not gate.idle.is_set()  # stored only once the server settles them
        link.push(LeaseSettled("r1", 1))
        await asyncio.sleep(0.01)
        assert not gate.idle.is_set()
        link.push(LeaseSettled("r2", 2))
        await idle(gate)
        assert w.stats.running == 0

    worker = run(body, backend)
    assert (worker.stats.granted, worker.stats.completed) == (2, 2)


def test_idle_waits_for_the_servers_answer_to_the_drain() -> None:
    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        link = await c.link(0)
        gate.drain(w)
        await link.until(lambda ln: any(r.draining for r in ln.reports))
        await asyncio.sleep(0.01)
        assert not gate.idle.is_set()  # a grant may still be on its way
        link.push(LeaseDraining())
        await idle(gate)

    run(body, ScriptedBackend())


def test_a_drain_without_a_stream_is_idle_at_once() -> None:
    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        c.fail = 1000  # the server is unreachable
        gate.drain(w)
        await idle(gate)

    run(body, ScriptedBackend())


def test_a_preempted_or_cancelled_run_ends_its_lease() -> None:
    backend = ScriptedBackend(words=1)
    backend.gate.clear()

    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        link = await c.link(0)
        link.push(grant("r1", 1))
        link.push(grant("r2", 2))
        await link.until(lambda ln: bool(ln.chunks("r1")) and bool(ln.chunks("r2")))
        gate.drain(w)
        link.push(LeaseDraining())
        link.push(LeaseStop("r1", 1, "preempt"))
        await link.until(lambda ln: bool(ln.stopped))
        assert gate.leases == 1
        assert not gate.idle.is_set()
        link.push(LeaseStop("r2", 2, "cancel"))
        await idle(gate)

    run(body, backend)


def test_a_stream_that_breaks_while_draining_reopens_to_finish_its_kept_runs_then_is_idle() -> None:
    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        link = await first_link_running(c)
        assert link.credits == 4
        gate.drain(w)
        link.push(LeaseDraining())
        await link.until(lambda ln: any(r.draining for r in ln.reports))
        link.push(BREAK)  # r1 goes on: the server holds its lease lease_s
        second = await reconnected(c, CLOCK, 2)
        # Stopped now, the worker would lose r1, and its request would wait out
        # the grace before it is queued again.
        assert not gate.idle.is_set()
        assert gate.leases == 1
        assert (second.credits, second.hello.held) == (0, (HeldLease("r1", 1),))
        await second.until(lambda ln: bool(ln.reports) and ln.reports[0].draining)
        second.push(LeaseDraining())  # the server's answer (it took over a draining stream)
        b.gate.set()
        await second.until(lambda ln: bool(ln.completions))
        await asyncio.sleep(0.01)
        assert not gate.idle.is_set()  # stored only once the server settles it
        second.push(LeaseSettled("r1", 1))
        await idle(gate)
        assert second.credits_back == 0

    run(body, ScriptedBackend(words=1, hold=True))


def test_a_completion_not_settled_at_the_break_keeps_a_draining_worker_busy() -> None:
    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        link = await c.link(0)
        link.push(grant("r1", 1))
        await link.until(lambda ln: bool(ln.completions))
        gate.drain(w)
        link.push(LeaseDraining())
        link.push(BREAK)  # before the server's Settled: the completion may be lost
        second = await reconnected(c, CLOCK, 2)
        assert not gate.idle.is_set()
        assert second.hello.held == (HeldLease("r1", 1),)
        await second.until(lambda ln: bool(ln.completions))
        assert second.completions == [Completion("r1", 1, 7, 3, "length")]
        second.push(LeaseDraining())
        second.push(LeaseSettled("r1", 1))
        await idle(gate)

    run(body, ScriptedBackend())


def test_kept_runs_given_up_after_lease_s_leave_a_draining_worker_idle() -> None:
    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        link = await first_link_running(c)
        gate.drain(w)
        c.fail = 1000  # the server is out of reach from now on
        link.push(BREAK)
        await jump_until(gate.idle.is_set, CLOCK)
        # The server has queued r1 again by now: the worker stopped it, and
        # holds nothing any more.
        assert gate.idle.is_set()
        assert b.cancelled == ["r1"]

    run(body, ScriptedBackend(words=1, hold=True))


def test_a_stream_that_breaks_while_draining_a_worker_keeping_no_runs_is_idle() -> None:
    async def body(w: Worker, gate: DrainGate, c: Connector, b: ScriptedBackend) -> None:
        link = await first_link_running(c)
        gate.drain(w)
        link.push(BREAK)  # the server released r1's lease with the stream
        await idle(gate)
        second = await reconnected(c, CLOCK, 2)
        assert (second.credits, second.hello.held) == (0, ())
        await second.until(lambda ln: bool(ln.reports) and ln.reports[0].draining)

    run(body, ScriptedBackend(words=1, hold=True), keep_runs=False)
