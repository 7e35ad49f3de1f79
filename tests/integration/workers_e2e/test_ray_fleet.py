"""Workers as Ray actors on a local Ray: serve, and come back after a kill.

Ray starts once for the module (two CPUs, no dashboard): it costs seconds
and hundreds of MiB, so the module keeps to one test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tidegate.client import InferenceClient, ReplyChunk, RequestState, SubmitOptions
from workers.fleet import RayFleet

from .conftest import KEYS, Server, read_reply, spec

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.crash]

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def fleet(local_ray: None, server: Server) -> Iterator[RayFleet]:
    del local_ray
    workers = RayFleet(spec(server), 2)
    workers.start()
    try:
        assert workers.wait_ready(60) == 2
        yield workers
    finally:
        workers.stop()


def test_ray_actors_serve_and_a_killed_actor_is_restarted(fleet: RayFleet, server: Server) -> None:
    assert not fleet.on_gpu  # no GPU here, and the simulated backend needs none

    async def main() -> None:
        async with InferenceClient(server.address, api_key=KEYS["acme"]) as client:
            submitted = await client.submit(
                "long", SubmitOptions(session="ray", input_tokens=20, output_tokens=300)
            )
            running: asyncio.Future[str] = asyncio.get_running_loop().create_future()

            def kill(chunk: ReplyChunk) -> None:
                if chunk.index == 20 and not running.done():
                    running.set_result("go")

            reading = asyncio.create_task(read_reply(client, submitted, kill))
            await asyncio.wait_for(running, 30)
            status = await client.status(submitted.request_id)
            victim = int(status.worker_id.rpartition("-")[2])
            fleet.kill(victim)  # its process dies; Ray starts it again
            reply = await reading
            assert reply.check_whole().outcome == "completed"
            final = await client.status(submitted.request_id)
            assert (final.state, final.attempts) == (RequestState.COMPLETED, 2)

    asyncio.run(main())
    assert fleet.wait_ready(60) == 2  # the killed actor is back, connected again
    stats = fleet.stats()
    assert sum(s["completed"] for s in stats) == 1
