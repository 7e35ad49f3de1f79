"""Idempotent Submit over a real server: a resent key gets the first request back and the
request runs once, across a crash too; the key's rule; the worker a finished request keeps."""

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
)

pytestmark = pytest.mark.integration


def same(first: pb.SubmitResponse, again: pb.SubmitResponse) -> None:
    assert again.duplicate
    assert not first.duplicate
    fields = ("request_id", "reply_topic", "reply_lite_topic", "reply_offset", "priority")
    assert [getattr(again, f) for f in fields] == [getattr(first, f) for f in fields]
    assert again.admitted_at == first.admitted_at


def test_a_resent_key_is_answered_with_the_first_request_which_runs_once(server: Server) -> None:
    first = submit(server, payload=b"once", idempotency_key="order-17")
    same(first, submit(server, payload=b"once", idempotency_key="order-17"))
    # The same key from another tenant is another request.
    other = submit(server, "beta", payload=b"once", idempotency_key="order-17")
    assert other.request_id != first.request_id
    assert not other.duplicate
    # SubmitStream with the key is answered on `open`.
    stream = server.inference().SubmitStream(
        iter(
            [
                pb.SubmitFrame(open=pb.SubmitRequest(payload=b"on", idempotency_key="order-17")),
                pb.SubmitFrame(payload=b"ce"),
            ]
        ),
        metadata=metadata("acme"),
        timeout=30,
    )
    same(first, stream)

    worker = RawWorker(server, "w1", credits=4)
    grants = [worker.grant()[0], worker.grant()[0]]
    assert sorted(g.request_id for g in grants) == sorted([first.request_id, other.request_id])
    with pytest.raises(queue.Empty):
        worker.expect("grants", timeout=0.5)
    mine = next(g for g in grants if g.request_id == first.request_id)
    worker.chunks(mine, b"done")
    worker.complete(mine)
    worker.expect("settled")
    # Finished: the same answer still, and the client reads one whole stream.
    late = submit(server, payload=b"once", idempotency_key="order-17")
    same(first, late)
    bodies, end = read_reply(server, late)
    assert (bodies, end["tidegate.outcome"]) == ([b"done"], "completed")
    with pytest.raises(queue.Empty):
        worker.expect("grants", timeout=0.5)
    worker.close()


def test_a_key_breaking_the_rule_is_invalid_argument_naming_it(server: Server) -> None:
    for bad in ("a b", "k" * 129, "päss", "x/y"):
        with pytest.raises(grpc.RpcError) as caught:
            submit(server, idempotency_key=bad)
        found = failure(caught.value)
        assert found.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "idempotency_key" in found.details
        assert "1 to 128 characters of [A-Za-z0-9_.:@=+-]" in found.details


@pytest.mark.crash
def test_keys_survive_a_crash_and_nothing_runs_twice(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(fsync="always")
    finished = submit(server, payload=b"f", session_id="s-f", idempotency_key="k-finished")
    queued = submit(server, payload=b"q", idempotency_key="k-queued")
    worker = RawWorker(server, "w1", credits=1)
    grant, payload, _ = worker.grant()
    assert (grant.request_id, payload) == (finished.request_id, b"f")
    worker.chunks(grant, b"out")
    worker.complete(grant, credits=0)
    worker.expect("settled")

    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    server.start()

    same(finished, submit(server, payload=b"f", session_id="s-f", idempotency_key="k-finished"))
    same(queued, submit(server, payload=b"q", idempotency_key="k-queued"))
    back = RawWorker(server, "w1", credits=4)
    regrant, payload, _ = back.grant()
    assert (regrant.request_id, payload) == (queued.request_id, b"q")
    with pytest.raises(queue.Empty):
        back.expect("grants", timeout=0.5)
    back.complete(regrant)
    back.expect("settled")
    bodies, end = read_reply(server, finished)
    assert (bodies, end["tidegate.outcome"]) == ([b"out"], "completed")
    # Still remembered after a second, clean restart.
    back.finish()
    server.stop()
    server.start()
    same(queued, submit(server, payload=b"q", idempotency_key="k-queued"))
    idle = RawWorker(server, "w1", credits=4)
    idle.opened()
    with pytest.raises(queue.Empty):
        idle.expect("grants", timeout=0.5)
    idle.close()


def test_status_of_a_finished_request_names_the_worker_that_ran_it(server: Server) -> None:
    completed = submit(server, payload=b"a")
    worker = RawWorker(server, "w-gpu-3", credits=1)
    grant, _, _ = worker.grant()
    worker.complete(grant, credits=0)
    worker.expect("settled")
    final = status(server, completed.request_id)
    assert (final.state, final.worker_id) == (pb.RequestStatus.COMPLETED, "w-gpu-3")

    running = submit(server, payload=b"b")
    worker.send(pb.WorkerMessage(credits=1))
    worker.grant()
    answer = server.inference().Cancel(
        pb.CancelRequest(request_id=running.request_id), metadata=metadata("acme"), timeout=10
    )
    assert answer.cancelled
    assert (answer.status.state, answer.status.worker_id) == (
        pb.RequestStatus.CANCELLED,
        "w-gpu-3",
    )
    assert status(server, running.request_id).worker_id == "w-gpu-3"
    worker.close()


def test_the_servers_serving_section_bounds_the_keys(
    server_factory: Callable[..., Server],
) -> None:
    # idempotency_max_keys: 0 -- a finished request's key is not remembered,
    # while a queued one's still is: `tidegate serve` applies `serving:`.
    server = server_factory(extra="serving:\n  idempotency_max_keys: 0\n")
    first = submit(server, payload=b"once", idempotency_key="order-9")
    same(first, submit(server, payload=b"once", idempotency_key="order-9"))
    worker = RawWorker(server, "w1", credits=4)
    grant = worker.grant()[0]
    worker.chunks(grant, b"done")
    worker.complete(grant)
    worker.expect("settled")
    again = submit(server, payload=b"once", idempotency_key="order-9")
    assert not again.duplicate
    assert again.request_id != first.request_id
    worker.close()
