"""The fleet grows on a queued burst and shrinks back once the queue is empty,
on a local Ray against a real server whose queue depth it reads with the
fleet's key (FleetStatus; the server has no metrics port).

One worker whose window is one request at a time gets a burst of requests
of about a second each: the queue stays above the threshold, a second actor
joins and takes work; once the queue is empty it is drained (nothing new,
its runs finish) and ends. Every request completes exactly once, on its
first attempt: nothing was handed back by the drained worker. Ray starts
once for the module (two CPUs, no dashboard).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from tidegate.client import InferenceClient, RequestState, SubmitOptions
from workers.autoscale import AutoscaleConfig, QueueDepthAutoscaler
from workers.fleet import RayFleet
from workers.queue_depth import FleetStatusDepth
from workers.scaling import Autoscaler

from .conftest import KEYS, ONE_AT_A_TIME, Reply, Server, read_reply, spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ray = pytest.importorskip("ray")

BURST = 16
TOKENS = 100  # about a second each on the fast simulated GPU


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("srv"), ONE_AT_A_TIME).start()
    try:
        yield server
    finally:
        server.stop(timeout=20, kill_late=True)


def wait_for(what: str, predicate: object, timeout_s: float) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_burst_grows_the_fleet_and_it_shrinks_back_when_the_queue_empties(
    local_ray: None, one_at_a_time: Server
) -> None:
    del local_ray
    server = one_at_a_time
    fleet = RayFleet(spec(server), 1)
    fleet.start()
    stop = threading.Event()
    said: list[str] = []
    config = AutoscaleConfig(
        min_replicas=1,
        max_replicas=2,
        up_queued_per_replica=2.0,
        down_queued_per_replica=0.0,
        up_after_s=0.5,
        down_after_s=1.0,
        cooldown_s=1.0,
    )
    depth = FleetStatusDepth(server.address, KEYS["fleet"])
    scaler = Autoscaler(
        fleet,
        depth,
        QueueDepthAutoscaler(config),
        interval_s=0.25,
        drain_timeout_s=60.0,
        announce=said.append,
    )
    thread = threading.Thread(target=scaler.run, args=(stop,), name="autoscaler")
    try:
        assert fleet.wait_ready(60) == 1
        thread.start()

        async def burst() -> tuple[list[Reply], set[str]]:
            async with InferenceClient(server.address, api_key=KEYS["acme"]) as client:
                submitted = [
                    await client.submit(
                        f"burst {i}",
                        SubmitOptions(session=f"as-{i}", input_tokens=10, output_tokens=TOKENS),
                    )
                    for i in range(BURST)
                ]
                replies = await asyncio.gather(
                    *(read_reply(client, s, timeout_s=90) for s in submitted)
                )
                workers: set[str] = set()
                for reply in replies:
                    status = await client.status(reply.submitted.request_id)
                    assert status.state == RequestState.COMPLETED
                    assert status.attempts == 1  # never handed back, never run twice
                    workers.add(status.worker_id)
                return list(replies), workers

        replies, ran_on = asyncio.run(burst())
        for reply in replies:
            assert reply.check_whole().outcome == "completed"
            assert len(reply.chunks) > 0
        assert [d.action for d in scaler.decisions][:1] == ["add"], said
        assert ran_on == {"worker-0", "worker-1"}, (ran_on, said)

        # The queue is empty now: worker 1 is drained and ends.
        wait_for("the fleet to shrink back to one", lambda: bool(scaler.reaped), 30)
        assert fleet.replicas == 1
        assert [d.action for d in scaler.decisions] == ["add", "remove"], said
        ((index, last),) = scaler.reaped
        assert index == 1
        assert last is not None
        assert last["drained"] is True
        # Every request finished once: the completions of the drained worker
        # and the one left add up to the burst, with nothing run twice.
        completed = last["completed"] + sum(s["completed"] for s in fleet.stats())
        assert completed == BURST
        assert last["late_grants"] == 0  # the queue was empty when it drained
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(30)
        fleet.stop()
        depth.close()
