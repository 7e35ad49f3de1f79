"""The serving path over a real OpenAI-compatible engine: ``transformers serve`` with a tiny model.

Client -> server -> worker (OpenAI backend) -> engine -> chunks -> client.
The model is built locally and always writes exactly ``max_tokens`` tokens.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest

from tests.support.model_server import ModelServer, start_model_server
from tests.support.tiny_model import build_tiny_model
from tidegate.client import InferenceClient, SubmitOptions
from workers.fleet import FleetSpec

from .conftest import KEYS, Server, local_fleet, read_reply

pytestmark = [pytest.mark.integration, pytest.mark.slow]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    model = build_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    server = start_model_server(
        model,
        tmp_path_factory.mktemp("serve"),
        continuous_batching=True,
        cb_options=("--cb-num-blocks", "128", "--cb-block-size", "32"),
    )
    try:
        yield server
    finally:
        server.stop()


def test_requests_stream_through_an_openai_compatible_engine(
    server: Server, engine: ModelServer
) -> None:
    fleet = FleetSpec(
        server.address,
        KEYS["fleet"],
        "openai",
        {"base_url": engine.base_url, "model": engine.model, "engine": "transformers"},
        capacity=4,
    )

    async def main() -> None:
        async with (
            local_fleet(fleet) as (worker,),
            InferenceClient(server.address, api_key=KEYS["acme"]) as client,
        ):
            chat = json.dumps([{"role": "user", "content": "hello there"}])
            submitted = [
                await client.submit("Once upon a time", SubmitOptions(output_tokens=12)),
                await client.submit(
                    chat,
                    SubmitOptions(
                        session="chat-1",
                        output_tokens=9,
                        properties={"prompt_format": "chat", "temperature": "0"},
                    ),
                ),
            ]
            replies = await asyncio.gather(*(read_reply(client, s) for s in submitted))
            for reply, tokens in zip(replies, (12, 9), strict=True):
                end = reply.check_whole()
                assert (end.outcome, end.output_tokens, end.finish_reason) == (
                    "completed",
                    tokens,
                    "length",
                )
                assert end.input_tokens > 0  # the engine's own count
                assert reply.chunks
            assert worker.stats.completed == 2

    asyncio.run(main())
