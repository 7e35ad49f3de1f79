"""Lost workers and preemption over a real server: each request finishes once, its stream whole."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from broker.proto import inference_pb2 as pb
from tests.integration.inference.harness import (
    FIXED_WINDOW,
    RawWorker,
    Server,
    failure,
    read_reply,
    status,
    submit,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_a_dead_worker_s_request_finishes_once_on_another(server: Server) -> None:
    submitted = submit(server, session_id="s")
    first = RawWorker(server, "w1")
    grant, _, _ = first.grant()
    first.chunks(grant, b"one ", b"two ")
    wait_for(lambda: status(server, submitted.request_id).chunks == 2)  # stored, then ...
    first.close()  # ... the worker process dies: its stream breaks

    second = RawWorker(server, "w2")
    again, payload, resume = second.grant()
    assert again.request_id == submitted.request_id
    assert again.lease_id != grant.lease_id
    assert (again.next_chunk, resume, payload, again.attempt) == (2, b"one two ", b"prompt", 2)
    # The dead worker's twin comes back with the old lease: fenced off.
    ghost = RawWorker(server, "w1")
    ghost.chunks(grant, b"ghost", start=2)
    ghost.complete(grant)
    rejected = [r for _ in range(2) for r in ghost.expect("rejected").rejected]
    assert {r.code for r in rejected} == {grpc.StatusCode.FAILED_PRECONDITION.value[0]}
    second.chunks(again, b"three")
    second.complete(again)
    bodies, end = read_reply(server, submitted)
    assert bodies == [b"one ", b"two ", b"three"]
    assert end["tidegate.outcome"] == "completed"
    second.finish()
    ghost.finish()


def test_a_worker_that_stops_heartbeating_loses_its_lease(server: Server) -> None:
    submitted = submit(server, session_id="s")
    quiet = RawWorker(server, "quiet", lease_s=0.5)
    assert quiet.opened().lease_s == 0.5
    grant, _, _ = quiet.grant()
    quiet.chunks(grant, b"a")
    wait_for(lambda: status(server, submitted.request_id).chunks == 1)
    with pytest.raises(grpc.RpcError) as ended:
        quiet.expect("grants", timeout=5)  # it says nothing more: the server ends its stream
    assert failure(ended.value).code is grpc.StatusCode.FAILED_PRECONDITION
    assert "lease_s" in failure(ended.value).details
    fresh = RawWorker(server, "fresh")
    again, _, resume = fresh.grant()
    assert (again.request_id, again.next_chunk, resume) == (submitted.request_id, 1, b"a")
    fresh.chunks(again, b"b")
    fresh.complete(again)
    assert read_reply(server, submitted)[0] == [b"a", b"b"]
    fresh.finish()


def test_preemption_resumes_from_the_stored_output(server_factory: Callable[..., Server]) -> None:
    server = server_factory(extra=FIXED_WINDOW)  # one request per worker at a time
    low = submit(server, session_id="low", priority=0)
    worker = RawWorker(server, "w1", credits=2)
    grant, _, _ = worker.grant()
    worker.chunks(grant, b"L0 ", b"L1 ")
    wait_for(lambda: status(server, low.request_id).chunks == 2)
    high = submit(server, session_id="high", priority=2)
    stop = worker.expect("stops").stops[0]
    assert (stop.request_id, stop.lease_id, stop.reason) == (
        low.request_id,
        grant.lease_id,
        pb.Stop.PREEMPT,
    )
    worker.send(
        pb.WorkerMessage(
            credits=1,
            stopped=[
                pb.Stopped(
                    request_id=grant.request_id, lease_id=grant.lease_id, done_output_tokens=2
                )
            ],
        )
    )
    urgent, _, _ = worker.grant()
    assert urgent.request_id == high.request_id
    worker.chunks(urgent, b"H")
    worker.complete(urgent)
    resumed, _, resume = worker.grant()
    assert resumed.request_id == low.request_id
    assert (resumed.next_chunk, resumed.done_output_tokens, resume) == (2, 2, b"L0 L1 ")
    worker.chunks(resumed, b"L2")
    worker.complete(resumed)
    assert read_reply(server, low)[0] == [b"L0 ", b"L1 ", b"L2"]
    assert read_reply(server, high)[0] == [b"H"]
    worker.finish()


def test_a_worker_s_overlong_failure_message_and_finish_reason_are_cut_not_fatal(
    server: Server,
) -> None:
    """A worker's text goes into the reply's end mark and the request's records,
    whose properties the broker bounds: a message of 100,000 non-ASCII
    characters (or as long a finish reason) is cut, the requests end as they
    should, and the server goes on serving."""
    long_text = "é" * 100_000
    failing = submit(server, session_id="fails")
    finishing = submit(server, session_id="finishes")
    worker = RawWorker(server, "w1", credits=2)
    grants = {g.request_id: g for g in (worker.grant()[0], worker.grant()[0])}
    doomed, done = grants[failing.request_id], grants[finishing.request_id]
    worker.send(
        pb.WorkerMessage(
            credits=2,  # both slots free again
            failed=[
                pb.Failed(
                    request_id=doomed.request_id,
                    lease_id=doomed.lease_id,
                    message=long_text,
                    retryable=False,
                )
            ],
            completions=[
                pb.Completion(
                    request_id=done.request_id,
                    lease_id=done.lease_id,
                    input_tokens=3,
                    output_tokens=1,
                    finish_reason=long_text,
                )
            ],
        )
    )
    wait_for(lambda: status(server, failing.request_id).state == pb.RequestStatus.FAILED)
    wait_for(lambda: status(server, finishing.request_id).state == pb.RequestStatus.COMPLETED)
    reason = status(server, failing.request_id).reason
    assert reason.startswith("worker 'w1' failed it: éé")
    assert len(reason.encode()) <= 16 * 1024
    _, end = read_reply(server, failing)
    assert end["tidegate.outcome"] == "failed"
    _, end = read_reply(server, finishing)
    assert end["tidegate.outcome"] == "completed"
    assert len(end["tidegate.finish_reason"].encode()) <= 16 * 1024
    # Still serving: the next request is granted, run and completed.
    after = submit(server, session_id="after")
    grant, _, _ = worker.grant()
    assert grant.request_id == after.request_id
    worker.chunks(grant, b"ok")
    worker.complete(grant)
    bodies, end = read_reply(server, after)
    assert (bodies, end["tidegate.outcome"]) == ([b"ok"], "completed")
    worker.finish()
