"""A draining Lease stream: nothing granted after the drain, its runs go on (memory store)."""

from __future__ import annotations

from scheduler.runtime import DrainingOut, GrantOut, State, SubmitSpec, WorkerInput
from tests.unit.runtime.support import FakeWorker, make_runtime, run, settle


def test_a_drain_takes_back_an_unsent_grant_and_answers_after_what_was_sent() -> None:
    async def body() -> None:
        runtime, _, _ = make_runtime()
        await runtime.start()
        first = await runtime.submit("acme", SubmitSpec(session="a"), b"p")
        second = await runtime.submit("acme", SubmitSpec(session="b"), b"p")
        worker = FakeWorker(runtime, "w1")
        worker.credit(1)
        sent = await worker.grant()
        assert sent.request_id == first.request_id
        worker.credit(3)
        runtime.core.pump()  # decided for w1 ...
        assert second.request_id in worker.session.leases
        worker.send(WorkerInput(draining=True))  # ... but the drain comes before it is sent
        inbox = await worker.drain()
        assert inbox == [DrainingOut()]
        assert second.request_id not in worker.session.leases
        status = runtime.status("acme", second.request_id)
        assert (status.state, status.attempts) == (State.QUEUED, 0)
        # It never reached w1: a Status after it ends must not name w1.
        assert runtime.core.live[second.request_id].last_worker == ""

        # Credits and a second drain change nothing; the running request completes.
        worker.send(WorkerInput(credits=5, draining=True))
        assert await worker.drain() == []
        worker.complete(sent)
        await settle()
        assert runtime.status("acme", first.request_id).state == State.COMPLETED
        assert [type(x).__name__ for x in await worker.drain()] == ["SettledOut"]

        other = FakeWorker(runtime, "w2")
        other.credit(1)
        again = await other.grant()
        assert isinstance(again, GrantOut)
        assert (again.request_id, again.attempt) == (second.request_id, 1)
        view = runtime.fleet_status("fleet")
        assert (view.queued, view.in_flight, view.workers, view.draining_workers) == (0, 1, 2, 1)
        await runtime.stop()

    run(body)
