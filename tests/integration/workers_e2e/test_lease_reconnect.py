"""A real worker whose Lease stream is cut mid-request (the process lives on): it
reconnects within lease_s, keeps its lease, and the request finishes once, on it."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.clock import MonotonicClock
from tidegate.client import (
    InferenceClient,
    LeaseStream,
    ReplyChunk,
    RequestState,
    SubmitOptions,
    WorkerHello,
)
from workers.backends.factory import create_backend
from workers.worker import Worker, WorkerConfig

from .conftest import FAST_MODEL, KEYS, Server, read_reply

pytestmark = pytest.mark.integration


def test_a_cut_stream_reopened_in_time_finishes_the_request_once_on_the_same_worker(
    server: Server,
) -> None:
    async def main() -> None:
        clock = MonotonicClock()
        options = {"model": FAST_MODEL, "chunk_interval_s": 0.005, "worker_id": "keeper"}
        backend = create_backend("simulated", options, clock=clock)
        links: list[LeaseStream] = []
        async with (
            InferenceClient(server.address, api_key=KEYS["fleet"]) as fleet,
            InferenceClient(server.address, api_key=KEYS["acme"]) as client,
        ):

            async def connect(hello: WorkerHello, *, credits: int) -> LeaseStream:
                link = await fleet.lease(hello, credits=credits)
                links.append(link)
                return link

            worker = Worker(WorkerConfig("keeper", capacity=4), backend, connect, clock=clock)
            running = asyncio.create_task(worker.run())
            try:
                await asyncio.wait_for(worker.connected.wait(), 30)
                submitted = await client.submit(
                    "tell me", SubmitOptions(session="cut", input_tokens=50, output_tokens=300)
                )
                cut = asyncio.Event()

                def on_chunk(chunk: ReplyChunk) -> None:
                    if chunk.index == 20 and not cut.is_set():
                        links[-1]._call.cancel()  # the stream breaks; the worker lives on
                        cut.set()

                reply = await read_reply(client, submitted, on_chunk)
                end = reply.check_whole()  # no gap, no duplicate, one end
                assert end.outcome == "completed"
                assert cut.is_set()
                assert len(reply.chunks) > 20
                status = await client.status(submitted.request_id)
                assert (status.state, status.attempts, status.worker_id) == (
                    RequestState.COMPLETED,
                    1,  # never queued again
                    "keeper",
                )
                assert len(links) == 2
                assert (worker.stats.granted, worker.stats.completed) == (1, 1)
            finally:
                worker.stop()
                await asyncio.wait_for(running, 30)

    asyncio.run(main())
