"""Reconnect grace over a real server: a worker whose Lease stream is cut but which
lives on keeps its leases when it comes back within lease_s naming them."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Callable

import pytest

from broker.proto import inference_pb2 as pb
from tests.integration.inference.harness import (
    RawWorker,
    Server,
    read_reply,
    status,
    submit,
    wait_for,
)

pytestmark = pytest.mark.integration


def _server(server_factory: Callable[..., Server]) -> tuple[Server, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    return server_factory(args=("--metrics-port", str(port))), port


def _events(port: int, event: str) -> float:
    """The runtime's counter ``event`` as the server's /metrics says (0 if absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(rf'^tidegate_scheduler_events_total{{event="{event}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _granted_to_w1(
    server: Server, *, lease_s: float = 0.0
) -> tuple[pb.SubmitResponse, RawWorker, pb.Grant]:
    """A request (session "s") granted to w1, a worker that keeps its leases and whose
    hello asks for ``lease_s``."""
    submitted = submit(server, session_id="s")
    worker = RawWorker(server, "w1", keeps_leases=True, lease_s=lease_s)
    grant, _, _ = worker.grant()
    return submitted, worker, grant


def _completed_once_by_w1(server: Server, submitted: pb.SubmitResponse, *bodies: bytes) -> None:
    """The request ended completed, after one attempt, on w1, with ``bodies`` as its reply."""
    got, end = read_reply(server, submitted)
    assert got == list(bodies)
    assert end["tidegate.outcome"] == "completed"
    done = status(server, submitted.request_id)
    assert (done.state, done.attempts, done.worker_id) == (pb.RequestStatus.COMPLETED, 1, "w1")


def test_a_stream_cut_mid_request_and_reopened_in_time_keeps_its_lease(
    server_factory: Callable[..., Server],
) -> None:
    server, port = _server(server_factory)
    submitted, first, grant = _granted_to_w1(server, lease_s=5.0)
    first.chunks(grant, b"one ", b"two ")
    wait_for(lambda: status(server, submitted.request_id).chunks == 2)
    first.close()  # the stream is cut; the worker process goes on generating
    running = status(server, submitted.request_id)
    assert (running.state, running.worker_id) == (pb.RequestStatus.RUNNING, "w1")

    back = RawWorker(server, "w1", keeps_leases=True, lease_s=5.0, held=(grant,), credits=3)
    back.opened()
    # It sends all it made again: what was stored is dropped, the rest stored once.
    back.chunks(grant, b"one ", b"two ", b"three ", b"four")
    back.complete(grant)
    assert back.expect("settled").settled[0].lease_id == grant.lease_id
    _completed_once_by_w1(server, submitted, b"one ", b"two ", b"three ", b"four")
    assert _events(port, "lease_expired") == 0
    assert (_events(port, "leases_held"), _events(port, "leases_reattached")) == (1, 1)
    back.finish()


def test_a_stream_cut_and_not_reopened_within_lease_s_is_requeued_as_before(
    server_factory: Callable[..., Server],
) -> None:
    server, port = _server(server_factory)
    submitted, first, grant = _granted_to_w1(server, lease_s=1.0)
    first.chunks(grant, b"one ")
    wait_for(lambda: status(server, submitted.request_id).chunks == 1)
    first.close()

    second = RawWorker(server, "w2")
    again, _, resume = second.grant(timeout=10)  # once the grace (lease_s) is over
    assert (again.request_id, again.next_chunk, resume, again.attempt) == (
        submitted.request_id,
        1,
        b"one ",
        2,
    )
    assert _events(port, "lease_expired") == 1
    # Too late: its hello names a lease the server no longer holds, so it is told to stop.
    late = RawWorker(server, "w1", keeps_leases=True, held=(grant,))
    stop = late.expect("stops").stops[0]
    assert (stop.request_id, stop.lease_id, stop.reason) == (
        grant.request_id,
        grant.lease_id,
        pb.Stop.CANCEL,
    )
    second.chunks(again, b"two")
    second.complete(again)
    assert read_reply(server, submitted)[0] == [b"one ", b"two"]
    assert status(server, submitted.request_id).worker_id == "w2"
    second.finish()
    late.finish()


def test_a_hello_naming_a_lease_it_does_not_hold_is_refused_and_disturbs_nothing(
    server: Server,
) -> None:
    submitted, owner, grant = _granted_to_w1(server)
    owner.chunks(grant, b"mine ")
    wait_for(lambda: status(server, submitted.request_id).chunks == 1)
    # Another worker (one the server never saw) claims it: it is told to stop that lease.
    thief = RawWorker(server, "w9", keeps_leases=True, held=(grant,))
    stop = thief.expect("stops").stops[0]
    assert (stop.request_id, stop.lease_id, stop.reason) == (
        grant.request_id,
        grant.lease_id,
        pb.Stop.CANCEL,
    )
    thief.chunks(grant, b"stolen", start=1)
    assert thief.expect("rejected").rejected[0].request_id == grant.request_id
    owner.chunks(grant, b"still mine", start=1)
    owner.complete(grant)
    _completed_once_by_w1(server, submitted, b"mine ", b"still mine")
    owner.finish()
    thief.finish()


def test_a_completion_whose_settled_was_lost_with_the_stream_is_settled_again(
    server_factory: Callable[..., Server],
) -> None:
    server, port = _server(server_factory)
    submitted, first, grant = _granted_to_w1(server, lease_s=5.0)
    first.chunks(grant, b"one ", b"two")
    first.complete(grant)
    wait_for(lambda: status(server, submitted.request_id).state == pb.RequestStatus.COMPLETED)
    first.close()  # whatever the server answered died with the stream, as far as it knows

    # Not knowing whether its completion arrived, the worker names the lease and
    # sends everything again: it is told the completion is stored, twice (the
    # name, the completion), and nothing is refused, stopped or run again.
    back = RawWorker(server, "w1", keeps_leases=True, lease_s=5.0, held=(grant,))
    back.chunks(grant, b"one ", b"two")
    back.complete(grant)
    for _ in range(2):
        assert back.expect("settled").settled[0].lease_id == grant.lease_id
    assert not [f for f in back.pending if len(f.rejected) or len(f.stops) or len(f.grants)]
    _completed_once_by_w1(server, submitted, b"one ", b"two")
    assert (_events(port, "held_settled"), _events(port, "completion_duplicates")) == (1, 1)
    assert (_events(port, "held_refused"), _events(port, "rejected")) == (0, 0)
    assert _events(port, "lease_expired") == 0
    back.finish()
