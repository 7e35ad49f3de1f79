"""The OpenAI-compatible backend against a real ``transformers serve`` process.

The server is started once for the module (about 4 s) and serves the tiny
random Llama built into tmp; nothing is mocked and nothing leaves loopback.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.backend_contract import BackendContract, BackendFactory, request
from tests.support.model_server import ModelServer, free_port
from workers.backends.base import LENGTH, ChatMessage, collect
from workers.backends.openai import OpenAIBackend, OpenAIConfig, engine_profile
from workers.engine_metrics import EngineSignals
from workers.errors import (
    BackendRejectedError,
    BackendUnavailableError,
    WorkerConfigError,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def backend_for(server: ModelServer, engine: str = "transformers") -> OpenAIBackend:
    return OpenAIBackend(OpenAIConfig(server.base_url, server.model, engine_profile(engine)))


class TestOpenAIBackendContract(BackendContract):
    # transformers serve sends one delta per decoded piece of text; bytes of
    # one character can span tokens, so a delta may carry several.
    exact_counts = False
    long_tokens = 1000

    @pytest.fixture
    def make_backend(self, model_server: ModelServer) -> BackendFactory:
        return lambda: backend_for(model_server)


def test_usage_comes_from_the_engine(model_server: ModelServer) -> None:
    async def scenario() -> None:
        backend = backend_for(model_server)
        try:
            chat = (ChatMessage("user", "hello"),)
            _, short = await collect(backend.generate(request("u1", 4, prompt=chat)))
            long_chat = (ChatMessage("user", "hello " * 20),)
            _, long = await collect(backend.generate(request("u2", 4, prompt=long_chat)))
        finally:
            await backend.aclose()
        assert (short.output_tokens, short.reason) == (4, LENGTH)
        # The engine counted the prompts through its template and tokenizer.
        assert long.input_tokens > short.input_tokens > 2

    asyncio.run(scenario())


def test_an_unknown_request_field_is_a_clear_rejection(model_server: ModelServer) -> None:
    # The vllm profile sends `priority`; transformers serve refuses unknown
    # fields with HTTP 422: the error names the status and the field.
    async def scenario() -> None:
        backend = backend_for(model_server, engine="vllm")
        try:
            with pytest.raises(BackendRejectedError, match=r"HTTP 422.*priority") as caught:
                await collect(backend.generate(request("bad-1", 4, priority=2)))
            assert caught.value.status == 422
        finally:
            await backend.aclose()

    asyncio.run(scenario())


def test_a_wrong_model_name_is_a_clear_config_error(model_server: ModelServer) -> None:
    async def scenario() -> None:
        backend = OpenAIBackend(OpenAIConfig(model_server.base_url, "no-such-model"))
        try:
            with pytest.raises(WorkerConfigError, match="no-such-model"):
                await backend.start()
        finally:
            await backend.aclose()

    asyncio.run(scenario())


def test_an_engine_without_metrics_reads_as_unknown_signals(model_server: ModelServer) -> None:
    async def scenario() -> tuple[EngineSignals, EngineSignals]:
        plain = backend_for(model_server)
        # Scrapes /metrics, which transformers serve does not have (HTTP 404).
        scraping = backend_for(model_server, engine="vllm")
        try:
            return await plain.signals(), await scraping.signals()
        finally:
            await plain.aclose()
            await scraping.aclose()

    assert asyncio.run(scenario()) == (EngineSignals(), EngineSignals())


def test_a_server_that_is_down_is_a_clear_unavailable_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario() -> None:
        backend = OpenAIBackend(OpenAIConfig(url, "tiny", connect_timeout_s=2.0))
        try:
            with pytest.raises(BackendUnavailableError, match=f"cannot reach .*{url}"):
                await backend.start()
            with pytest.raises(BackendUnavailableError, match=f"cannot reach .*{url}"):
                await collect(backend.generate(request("down-1", 4)))
        finally:
            await backend.aclose()

    asyncio.run(scenario())
