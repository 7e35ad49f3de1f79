"""Server restarts (SIGTERM and SIGKILL) with queued and running requests:
none lost, none running twice at once, every reply stream whole."""

from __future__ import annotations

import queue
import signal
from collections.abc import Callable

import grpc
import pytest

from tests.integration.inference.harness import (
    RawWorker,
    Server,
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
