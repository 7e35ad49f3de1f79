"""The Inference API over a real server: submit, lease, output, refusals, cancel, deadlines."""

from __future__ import annotations

import hashlib
import queue
import socket
import urllib.request
from collections.abc import Callable, Iterator

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

pytestmark = pytest.mark.integration


def test_submit_lease_output_and_the_client_reads_one_stream(server: Server) -> None:
    submitted = submit(server, payload=b"tell me", session_id="s-1", priority=7, output_tokens=9)
    assert submitted.priority == 2  # capped to acme's max_priority
    assert (submitted.reply_topic, submitted.reply_lite_topic) == ("chatbot", "s-1")
    assert status(server, submitted.request_id).state == pb.RequestStatus.QUEUED

    worker = RawWorker(server, "w1")
    opened = worker.opened()
    assert opened.worker_id == "w1"
    assert opened.server_epoch >= 1
    grant, payload, resume = worker.grant()
    assert (grant.request_id, payload, resume) == (submitted.request_id, b"tell me", b"")
    assert (grant.tenant, grant.priority, grant.output_tokens, grant.attempt) == ("acme", 2, 9, 1)
    assert status(server, submitted.request_id).worker_id == "w1"
    worker.chunks(grant, b"Once ", b"upon ")
    worker.chunks(grant, b"upon ", b"a time", start=1)  # a resend of 1 is dropped
    worker.complete(grant)
    settled = worker.expect("settled").settled[0]
    assert (settled.request_id, settled.lease_id) == (grant.request_id, grant.lease_id)

    bodies, end = read_reply(server, submitted)
    assert bodies == [b"Once ", b"upon ", b"a time"]
    assert end["tidegate.outcome"] == "completed"
    assert end["tidegate.output_tokens"] == "4"
    final = status(server, submitted.request_id)
    assert (final.state, final.chunks, final.output_tokens) == (pb.RequestStatus.COMPLETED, 3, 4)
    # A second request of the same session starts at its own reply offset.
    again = submit(server, payload=b"more", session_id="s-1")
    assert again.reply_offset == 4
    grant2, _, _ = worker.grant()
    worker.chunks(grant2, b"!")
    worker.complete(grant2)
    assert read_reply(server, again)[0] == [b"!"]
    worker.finish()


def test_a_large_payload_streams_in_and_reaches_the_worker_in_pieces(server: Server) -> None:
    payload = bytes(range(256)) * (96 * 1024)  # 24 MiB: above the 16 MiB frame limit

    def frames() -> Iterator[pb.SubmitFrame]:
        yield pb.SubmitFrame(open=pb.SubmitRequest(payload=payload[: 1 << 20], session_id="big"))
        for at in range(1 << 20, len(payload), 1 << 20):
            yield pb.SubmitFrame(payload=payload[at : at + (1 << 20)])

    submitted = server.inference().SubmitStream(frames(), metadata=metadata("acme"), timeout=60)
    worker = RawWorker(server, "w1")
    grant, got, _ = worker.grant(timeout=30)
    assert grant.payload_chunked
    assert grant.payload_size == len(payload)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    assert grant.request_id == submitted.request_id
    worker.close()


def test_refusals_carry_reason_and_retry_after_in_trailing_metadata(server: Server) -> None:
    submit(server, tenant="beta")  # beta may submit one a second
    with pytest.raises(grpc.RpcError) as refused:
        submit(server, tenant="beta")
    error = failure(refused.value)
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    trailer = error.trailer
    assert trailer["tidegate-refusal-reason"] == "rate_requests"
    assert 0 < int(trailer["retry-after-ms"]) <= 1000
    assert "1 requests/s" in error.details

    with pytest.raises(grpc.RpcError) as worker_submits:
        submit(server, tenant="fleet")
    assert failure(worker_submits.value).code is grpc.StatusCode.PERMISSION_DENIED
    client_leases = RawWorker(server, "w1", tenant="acme")
    with pytest.raises(grpc.RpcError) as denied:
        client_leases.next()
    assert failure(denied.value).code is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as bad:
        server.inference().Submit(pb.SubmitRequest(), metadata=(("x-api-key", "nope"),))
    assert failure(bad.value).code is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as invalid:
        submit(server, session_id="no/slash")
    assert failure(invalid.value).code is grpc.StatusCode.INVALID_ARGUMENT
    assert "session_id" in failure(invalid.value).details


def test_cancel_queued_and_running(server: Server) -> None:
    queued = submit(server, session_id="q")
    answer = server.inference().Cancel(
        pb.CancelRequest(request_id=queued.request_id), metadata=metadata("acme"), timeout=10
    )
    assert answer.cancelled
    assert answer.status.state == pb.RequestStatus.CANCELLED
    assert read_reply(server, queued)[1]["tidegate.outcome"] == "cancelled"

    running = submit(server, session_id="r")
    worker = RawWorker(server, "w1")
    grant, _, _ = worker.grant()
    worker.chunks(grant, b"partial")
    wait_for(lambda: status(server, running.request_id).chunks == 1)
    server.inference().Cancel(
        pb.CancelRequest(request_id=running.request_id), metadata=metadata("acme"), timeout=10
    )
    stop = worker.expect("stops").stops[0]
    assert (stop.request_id, stop.reason) == (running.request_id, pb.Stop.CANCEL)
    worker.chunks(grant, b"late", start=1)
    rejected = worker.expect("rejected").rejected[0]
    assert rejected.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    bodies, end = read_reply(server, running)
    assert (bodies, end["tidegate.outcome"]) == ([b"partial"], "cancelled")
    with pytest.raises(grpc.RpcError) as other:
        server.inference().Status(
            pb.RequestStatusRequest(request_id=running.request_id), metadata=metadata("beta")
        )
    assert failure(other.value).code is grpc.StatusCode.NOT_FOUND
    worker.finish()


def test_a_queued_request_past_its_deadline_is_dropped(server: Server) -> None:
    doomed = submit(server, session_id="d", deadline_s=0.3)
    wait_for(lambda: status(server, doomed.request_id).state == pb.RequestStatus.DROPPED, 5)
    bodies, end = read_reply(server, doomed)
    assert (bodies, end["tidegate.outcome"]) == ([], "dropped")
    worker = RawWorker(server, "w1")
    worker.opened()
    with pytest.raises(queue.Empty):
        worker.expect("grants", timeout=0.5)  # nothing to run
    worker.close()


def test_a_settings_reload_applies_without_dropping_the_queue(server: Server) -> None:
    first = submit(server, priority=7, session_id="a")
    assert first.priority == 2
    config = server.directory / "config.yaml"
    config.write_text(config.read_text().replace("max_priority: 2", "max_priority: 1"))
    seen: list[int] = []

    def capped() -> bool:
        seen.append(submit(server, priority=7).priority)
        return seen[-1] == 1

    wait_for(capped, timeout=10)  # the server polls the file every second
    assert status(server, first.request_id).state == pb.RequestStatus.QUEUED


def test_metrics_name_the_scheduler(server_factory: Callable[..., Server]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = server_factory(args=("--metrics-port", str(port)))
    submit(server)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'tidegate_scheduler_queued{tenant="acme"} 1.0' in text
    assert 'tidegate_scheduler_events_total{event="submitted"} 1.0' in text
    assert "tidegate_broker_published_messages_total" in text
