"""Client -> server -> worker -> client, with real processes and the simulated GPU backend."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import stop_process
from tidegate.client import InferenceClient, Refused, ReplyChunk, RequestState, SubmitOptions

from .conftest import (
    KEYS,
    ONE_AT_A_TIME,
    Server,
    local_fleet,
    read_reply,
    spec,
    worker_process,
)

pytestmark = pytest.mark.integration


def test_submitted_requests_stream_whole_and_in_order(server: Server) -> None:
    async def main() -> None:
        async with (
            local_fleet(spec(server), replicas=2) as workers,
            InferenceClient(server.address, api_key=KEYS["acme"]) as client,
        ):
            sessions = ["s-a", "s-a", "s-b", "", "", "s-c"]
            submitted = [
                await client.submit(
                    f"prompt {i}", SubmitOptions(session=s, input_tokens=50, output_tokens=20 + i)
                )
                for i, s in enumerate(sessions)
            ]
            replies = await asyncio.gather(*(read_reply(client, s) for s in submitted))
            for i, reply in enumerate(replies):
                end = reply.check_whole()
                assert (end.outcome, end.output_tokens, end.finish_reason) == (
                    "completed",
                    20 + i,
                    "length",
                )
                assert len(reply.text.split()) == 20 + i  # the simulated GPU: a word a token
                status = await client.status(reply.submitted.request_id)
                assert (status.state, status.attempts) == (RequestState.COMPLETED, 1)
            assert sum(w.stats.completed for w in workers) == len(sessions)

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.crash
def test_a_worker_killed_mid_stream_the_request_finishes_once(
    server: Server, tmp_path: Path
) -> None:
    first = worker_process(server, "first", tmp_path / "first.log")
    second = None
    try:

        async def main() -> None:
            nonlocal second
            async with InferenceClient(server.address, api_key=KEYS["acme"]) as client:
                submitted = await client.submit(
                    "tell me", SubmitOptions(session="kill", input_tokens=50, output_tokens=300)
                )
                killed = asyncio.Event()

                def on_chunk(chunk: ReplyChunk) -> None:
                    if chunk.index == 20 and not killed.is_set():
                        first.send_signal(signal.SIGKILL)  # the worker process dies mid-stream
                        killed.set()

                reading = asyncio.create_task(read_reply(client, submitted, on_chunk))
                await asyncio.wait_for(killed.wait(), 30)
                second = worker_process(server, "second", tmp_path / "second.log")
                reply = await reading
                end = reply.check_whole()
                assert end.outcome == "completed"
                assert len(reply.chunks) > 20
                status = await client.status(submitted.request_id)
                assert (status.state, status.attempts) == (RequestState.COMPLETED, 2)
                assert reply.chunks[-1].data  # the second worker went on after the stored text

        asyncio.run(main())
        assert first.wait(10) == -signal.SIGKILL
    finally:
        stop_process(first)
        if second is not None:
            assert stop_process(second) == 0


def test_preemption_end_to_end(server_factory: Callable[..., Server]) -> None:
    server = server_factory(extra=ONE_AT_A_TIME)  # one request per worker at a time

    async def main() -> None:
        async with (
            local_fleet(spec(server)) as (worker,),
            InferenceClient(server.address, api_key=KEYS["acme"]) as client,
        ):
            low = await client.submit(
                "low", SubmitOptions(session="low", input_tokens=10, output_tokens=200)
            )
            started = asyncio.Event()

            def on_chunk(chunk: ReplyChunk) -> None:
                if chunk.index >= 5:
                    started.set()

            low_reply = asyncio.create_task(read_reply(client, low, on_chunk))
            await asyncio.wait_for(started.wait(), 30)
            high = await client.submit(
                "high", SubmitOptions(session="high", priority=2, input_tokens=10, output_tokens=10)
            )
            high_done = await read_reply(client, high)
            assert high_done.check_whole().outcome == "completed"
            low_done = await low_reply
            end = low_done.check_whole()
            assert end.outcome == "completed"
            status = await client.status(low.request_id)
            assert status.attempts == 2  # stopped once, resumed once
            assert worker.stats.preempted == 1
            assert end.output_tokens == 200  # the resumed run made only the rest
            assert len(low_done.text.split()) == 200

    asyncio.run(main())


def test_a_refused_submit_carries_reason_and_retry_after(server: Server) -> None:
    async def main() -> None:
        async with InferenceClient(server.address, api_key=KEYS["beta"]) as client:
            await client.submit("one")
            with pytest.raises(Refused) as refused:
                await client.submit("two")
            assert refused.value.reason == "rate_requests"
            assert 0 < refused.value.retry_after_s <= 1.0

    asyncio.run(main())
