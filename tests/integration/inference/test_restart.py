"""Server restarts (SIGTERM and SIGKILL) with queued and running requests:
none lost, none running twice at once, every reply stream whole; and
finished requests' Status as it was, within the server's finished_capacity."""

from __future__ import annotations

import queue
import signal
from collections.abc import Callable

import grpc
import pytest

from broker.proto import inference_pb2 as pb
from tests.integration.inference.harness import (
    RawWorker,
    Server,
    failure,
    metadata,
    read_reply,
    status,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.crash]


@pytest.mark.parametrize(
    ("sig", "fsync"), [(signal.SIGTERM, "interval"), (signal.SIGKILL, "always")]
)
def test_requests_survive_a_restart(
    server_factory: Callable[..., Server], sig: int, fsync: str
) -> None:
    server = server_factory(fsync=fsync)
    submitted = [submit(server, payload=b"p%d" % i, session_id=f"s{i}") for i in range(5)]
    worker = RawWorker(server, "w1", credits=2)
    running, _, _ = worker.grant()
    finished, _, _ = worker.grant()
    worker.chunks(running, b"r0 ", b"r1 ")
    worker.chunks(finished, b"done")
    worker.complete(finished, credits=0)
    worker.expect("settled")
    wait_for(lambda: status(server, running.request_id).chunks == 2)
    old_epoch = running.lease_id >> 32

    code = server.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
    with pytest.raises(grpc.RpcError):
        worker.next(timeout=5)  # the old stream is gone with the old process
    server.start()

    back = RawWorker(server, "w1", credits=10)
    # The old lease means nothing to the new process: a request never runs twice at once.
    back.chunks(running, b"stale", start=2)
    assert back.expect("rejected").rejected[0].request_id == running.request_id
    grants = {}
    for _ in range(4):
        grant, payload, resume = back.grant()
        grants[grant.request_id] = (grant, payload, resume)
        assert grant.lease_id >> 32 > old_epoch  # a new boot: ids never repeat
    assert finished.request_id not in grants
    resumed, payload, resume = grants[running.request_id]
    assert (resumed.next_chunk, resume) == (2, b"r0 r1 ")
    for grant, payload, _ in grants.values():
        index = [s.request_id for s in submitted].index(grant.request_id)
        assert payload == b"p%d" % index
        back.chunks(grant, b"end")
        back.complete(grant)
    for i, request in enumerate(submitted):
        bodies, end = read_reply(server, request)
        assert end["tidegate.outcome"] == "completed"
        if request.request_id == running.request_id:
            assert bodies == [b"r0 ", b"r1 ", b"end"]
        elif request.request_id == finished.request_id:
            assert bodies == [b"done"]
        else:
            assert bodies == [b"end"], i
    back.finish()
    # And a second restart finds nothing left to run.
    server.stop()
    server.start()
    idle = RawWorker(server, "w1", credits=10)
    idle.opened()
    with pytest.raises(queue.Empty):
        idle.expect("grants", timeout=0.5)
    idle.close()


@pytest.mark.parametrize(
    ("sig", "fsync"), [(signal.SIGTERM, "interval"), (signal.SIGKILL, "always")]
)
def test_a_finished_requests_status_survives_a_restart(
    server_factory: Callable[..., Server], sig: int, fsync: str
) -> None:
    # Two finished requests remembered (the live bound and the one across
    # restarts); the journal compacted as soon as it can be.
    extra = "serving:\n  finished_capacity: 2\n  finished_compact_s: 0.1\n"
    server = server_factory(fsync=fsync, extra=extra)
    forgotten = submit(server, session_id="old")
    stub = server.inference()
    stub.Cancel(pb.CancelRequest(request_id=forgotten.request_id), metadata=metadata("acme"))
    completed = submit(server, session_id="s1")
    worker = RawWorker(server, "w1", credits=1)
    grant, _, _ = worker.grant()
    worker.chunks(grant, b"a", b"b")
    worker.complete(grant, output_tokens=9, credits=0)
    worker.expect("settled")
    cancelled = submit(server, session_id="s2")
    stub.Cancel(pb.CancelRequest(request_id=cancelled.request_id), metadata=metadata("acme"))
    before = {r.request_id: status(server, r.request_id) for r in (completed, cancelled)}
    done = before[completed.request_id]
    assert (done.state, done.worker_id, done.chunks, done.attempts) == (
        pb.RequestStatus.COMPLETED,
        "w1",
        2,
        1,
    )
    assert (done.input_tokens, done.output_tokens) == (3, 9)
    assert before[cancelled.request_id].state == pb.RequestStatus.CANCELLED
    worker.finish()

    for _ in range(2):  # the second restart reads what the first one compacted
        server.stop(sig)
        server.start()
        for request_id, was in before.items():
            assert status(server, request_id) == was
        for request_id in (forgotten.request_id, "ffff-1"):  # past finished_capacity; never
            with pytest.raises(grpc.RpcError) as lost:
                status(server, request_id)
            found = failure(lost.value)
            assert found.code == grpc.StatusCode.NOT_FOUND
            assert request_id in found.details
        # Cancel answers with the final state, as before the restart.
        answer = server.inference().Cancel(
            pb.CancelRequest(request_id=completed.request_id), metadata=metadata("acme")
        )
        assert (answer.cancelled, answer.status) == (False, done)
