"""Draining a worker and FleetStatus, over a real server.

A worker that says ``draining`` gets no grant after the server's answer,
whatever credits it sends, while the request it runs completes as usual;
FleetStatus counts what was submitted and granted, per band and tenant,
and only a worker tenant's key may read it.
"""

from __future__ import annotations

import asyncio
import queue

import grpc
import pytest

from broker.proto import inference_pb2 as pb
from tests.integration.inference.harness import (
    KEYS,
    RawWorker,
    Server,
    failure,
    metadata,
    read_reply,
    status,
    submit,
    wait_for,
)
from tidegate.client import InferenceClient
from tidegate.errors import PermissionDenied
from workers.queue_depth import FleetStatusDepth

pytestmark = pytest.mark.integration


def fleet_status(server: Server, tenant: str = "fleet") -> pb.FleetStatusResponse:
    found: pb.FleetStatusResponse = server.inference().FleetStatus(
        pb.FleetStatusRequest(), metadata=metadata(tenant), timeout=10
    )
    return found


def drain_answer(worker: RawWorker, timeout: float = 10.0) -> pb.ServerMessage:
    """The frame answering the drain (frames before it wait in ``pending``)."""
    skipped: list[pb.ServerMessage] = []
    try:
        while True:
            frame = worker.next(timeout)
            if frame.draining:
                return frame
            skipped.append(frame)
    finally:
        worker.pending = skipped + worker.pending


def no_grant(worker: RawWorker, seconds: float) -> None:
    with pytest.raises(queue.Empty):
        worker.expect("grants", timeout=seconds)


def test_a_draining_worker_gets_no_new_grant_and_its_running_request_completes(
    server: Server,
) -> None:
    first = submit(server, session_id="d-1")
    worker = RawWorker(server, "w1", credits=4)
    grant, _, _ = worker.grant()
    assert grant.request_id == first.request_id
    worker.chunks(grant, b"one ")
    worker.send(pb.WorkerMessage(draining=True))
    drain_answer(worker)  # the answer: nothing follows

    # Work arrives, credits keep coming: the draining worker gets none of it.
    later = [submit(server, session_id=f"d-{i}") for i in range(2, 5)]
    worker.send(pb.WorkerMessage(credits=8))
    no_grant(worker, 1.0)
    fleet = fleet_status(server)
    assert (fleet.queued, fleet.in_flight, fleet.workers, fleet.draining_workers) == (3, 1, 1, 1)

    # Its running request goes on to the end as usual.
    worker.chunks(grant, b"two", start=1)
    worker.complete(grant)
    assert worker.expect("settled").settled[0].request_id == first.request_id
    bodies, end = read_reply(server, first)
    assert (bodies, end["tidegate.outcome"]) == ([b"one ", b"two"], "completed")
    no_grant(worker, 0.5)

    # Another worker takes the rest, each on its first attempt: nothing was
    # handed back by the drained one.
    other = RawWorker(server, "w2", credits=4)
    granted = {other.grant()[0].request_id for _ in later}
    assert granted == {s.request_id for s in later}
    assert [status(server, s.request_id).attempts for s in later] == [1, 1, 1]
    assert status(server, first.request_id).attempts == 1
    worker.finish()
    other.finish()


def test_credits_sent_with_the_drain_are_never_used(server: Server) -> None:
    submitted = submit(server, session_id="x")
    worker = RawWorker(server, "w1", credits=0)
    worker.send(pb.WorkerMessage(credits=2, draining=True))
    drain_answer(worker)
    no_grant(worker, 0.5)
    other = RawWorker(server, "w2")
    grant, _, _ = other.grant()
    assert (grant.request_id, grant.attempt) == (submitted.request_id, 1)
    worker.finish()
    other.finish()


def test_fleet_status_counts_what_was_submitted_and_granted(server: Server) -> None:
    empty = fleet_status(server)
    assert (empty.queued, empty.in_flight, list(empty.bands), list(empty.tenants)) == (0, 0, [], [])

    low = [submit(server, session_id=f"low-{i}") for i in range(3)]
    high = submit(server, session_id="high", priority=2)
    beta = submit(server, tenant="beta", session_id="b")
    worker = RawWorker(server, "w1", credits=1)
    grant, _, _ = worker.grant()
    assert grant.request_id == high.request_id  # the higher band first

    found = fleet_status(server)
    assert (found.queued, found.in_flight) == (4, 1)
    assert [(b.priority, b.queued, b.in_flight) for b in found.bands] == [(2, 0, 1), (0, 4, 0)]
    assert [(t.tenant, t.queued, t.in_flight) for t in found.tenants] == [
        ("acme", 3, 1),
        ("beta", 1, 0),
    ]
    assert (found.workers, found.draining_workers) == (1, 0)

    # The autoscaler's reader and the SDK see the same.
    depth = FleetStatusDepth(server.address, KEYS["fleet"])
    try:
        assert depth.read() == 4.0
        assert depth.in_flight == 1
    finally:
        depth.close()

    worker.complete(grant, credits=0)
    wait_for(lambda: fleet_status(server).in_flight == 0)

    async def sdk() -> None:
        async with InferenceClient(server.address, api_key=KEYS["fleet"]) as client:
            seen = await client.fleet_status()
        assert (seen.queued, seen.in_flight, seen.workers) == (4, 0, 1)
        assert {band: (b.queued, b.in_flight) for band, b in seen.bands.items()} == {0: (4, 0)}
        assert {t: (v.queued, v.in_flight) for t, v in seen.tenants.items()} == {
            "acme": (3, 0),
            "beta": (1, 0),
        }

    asyncio.run(sdk())
    del low, beta
    worker.finish()


def test_only_a_worker_tenant_may_read_the_fleet_status(server: Server) -> None:
    with pytest.raises(grpc.RpcError) as denied:
        fleet_status(server, "acme")
    found = failure(denied.value)
    assert found.code is grpc.StatusCode.PERMISSION_DENIED
    assert "role: worker" in found.details
    assert "acme" in found.details

    with pytest.raises(grpc.RpcError) as anonymous:
        server.inference().FleetStatus(pb.FleetStatusRequest(), timeout=10)
    assert failure(anonymous.value).code is grpc.StatusCode.UNAUTHENTICATED

    async def sdk() -> None:
        async with InferenceClient(server.address, api_key=KEYS["acme"]) as client:
            with pytest.raises(PermissionDenied, match="role: worker"):
                await client.fleet_status()

    asyncio.run(sdk())

    depth = FleetStatusDepth(server.address, KEYS["beta"])
    try:
        with pytest.raises(OSError, match="role: worker"):
            depth.read()
    finally:
        depth.close()
