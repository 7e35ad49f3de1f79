"""One contract test suite for every inference backend.

A test module subclasses :class:`BackendContract` (a ``Test...`` name) and
provides the ``make_backend`` fixture: a factory called inside the test's
event loop. The same assertions then run against the simulated backend, the
in-process transformers backend and the OpenAI backend talking to a real
``transformers serve``. Backends whose engine ends sequences only at
``max_tokens`` (the tiny random model has no end token; the fleet model
always makes its tokens) are required here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeVar

import pytest

from workers.backends.base import (
    CANCELLED,
    LENGTH,
    Backend,
    ChatMessage,
    Chunk,
    Finished,
    GenerationEvent,
    GenerationRequest,
    SamplingParams,
    collect,
)
from workers.engine_metrics import EngineSignals
from workers.errors import DuplicateRequestError

__all__ = ["BackendContract", "BackendFactory", "request"]

T = TypeVar("T")
BackendFactory = Callable[[], Backend]

GREEDY = SamplingParams(temperature=0.0)


def request(
    request_id: str,
    max_tokens: int,
    prompt: str | tuple[ChatMessage, ...] = "the tide gate",
    **kwargs: object,
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id,
        prompt=prompt,
        max_tokens=max_tokens,
        sampling=GREEDY,
        **kwargs,  # type: ignore[arg-type]
    )


class BackendContract:
    """What every backend promises. Subclasses set the knobs and ``make_backend``."""

    #: chunk token counts add up to the usage exactly (False over HTTP, see Chunk)
    exact_counts: ClassVar[bool] = True
    #: a stream long enough to cancel in the middle of
    long_tokens: ClassVar[int] = 400
    #: the request that must finish while a long one runs
    short_tokens: ClassVar[int] = 8

    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        raise NotImplementedError("a contract subclass provides make_backend")

    @staticmethod
    def run(make_backend: BackendFactory, scenario: Callable[[Backend], Awaitable[T]]) -> T:
        async def main() -> T:
            backend = make_backend()
            await backend.start()
            try:
                return await asyncio.wait_for(scenario(backend), timeout=60)
            finally:
                await backend.aclose()

        return asyncio.run(main())

    def check_counts(self, chunks: list[Chunk], finished: Finished) -> None:
        delivered = sum(c.tokens for c in chunks)
        assert all(c.tokens >= 1 for c in chunks)
        if self.exact_counts:
            assert delivered == finished.output_tokens
        else:
            assert 1 <= delivered <= finished.output_tokens

    # ------------------------------------------------------------ streaming

    def test_a_text_prompt_streams_chunks_then_usage(self, make_backend: BackendFactory) -> None:
        async def scenario(backend: Backend) -> tuple[list[Chunk], Finished]:
            return await collect(backend.generate(request("text-1", 12)))

        chunks, finished = self.run(make_backend, scenario)
        assert len(chunks) >= 2
        assert "".join(c.text for c in chunks)
        assert finished.reason == LENGTH
        assert finished.output_tokens == 12
        assert finished.resumed_tokens == 0
        assert finished.input_tokens > 0
        self.check_counts(chunks, finished)

    def test_a_chat_prompt_streams_chunks_then_usage(self, make_backend: BackendFactory) -> None:
        chat = (ChatMessage("system", "be brief"), ChatMessage("user", "hello there"))

        async def scenario(backend: Backend) -> tuple[list[Chunk], Finished]:
            return await collect(backend.generate(request("chat-1", 10, prompt=chat)))

        chunks, finished = self.run(make_backend, scenario)
        assert (finished.reason, finished.output_tokens) == (LENGTH, 10)
        assert finished.input_tokens > 0
        self.check_counts(chunks, finished)

    def test_a_resumed_request_makes_only_the_missing_tokens(
        self, make_backend: BackendFactory
    ) -> None:
        async def scenario(backend: Backend) -> tuple[list[Chunk], Finished]:
            resumed = request(
                "resume-1", 12, resume_text="the tide gate queue worker ", resume_tokens=5
            )
            return await collect(backend.generate(resumed))

        chunks, finished = self.run(make_backend, scenario)
        assert finished.output_tokens == 7
        assert finished.resumed_tokens == 5
        assert finished.total_output_tokens == 12
        self.check_counts(chunks, finished)

    def test_a_request_resumed_at_its_end_finishes_at_once(
        self, make_backend: BackendFactory
    ) -> None:
        async def scenario(backend: Backend) -> tuple[list[Chunk], Finished]:
            done = request("resume-2", 5, resume_text="all of it", resume_tokens=5)
            return await collect(backend.generate(done))

        chunks, finished = self.run(make_backend, scenario)
        assert chunks == []
        assert (finished.output_tokens, finished.total_output_tokens) == (0, 5)
        assert finished.reason == LENGTH

    # ------------------------------------------------------------ cancel

    def test_cancel_mid_stream_ends_it_with_what_was_delivered(
        self, make_backend: BackendFactory
    ) -> None:
        async def scenario(backend: Backend) -> tuple[list[GenerationEvent], bool, bool]:
            events: list[GenerationEvent] = []
            cancelled = False
            async for event in backend.generate(request("long-1", self.long_tokens)):
                events.append(event)
                if not cancelled:
                    cancelled = await backend.cancel("long-1")
            again = await backend.cancel("long-1")
            # The id is free again: a new run of it streams normally.
            _, finished = await collect(backend.generate(request("long-1", 3)))
            assert finished.output_tokens == 3
            return events, cancelled, again

        events, cancelled, again = self.run(make_backend, scenario)
        assert cancelled is True
        assert again is False
        *chunks, finished = events
        assert isinstance(finished, Finished)
        assert finished.reason == CANCELLED
        assert all(isinstance(c, Chunk) for c in chunks)
        delivered = sum(c.tokens for c in chunks if isinstance(c, Chunk))
        assert finished.output_tokens == delivered
        assert 1 <= delivered < self.long_tokens

    def test_leaving_the_stream_early_stops_the_request(self, make_backend: BackendFactory) -> None:
        async def scenario(backend: Backend) -> bool:
            stream = backend.generate(request("early-1", self.long_tokens))
            first = await anext(stream)
            assert isinstance(first, Chunk)
            await stream.aclose()  # type: ignore[attr-defined]
            return await backend.cancel("early-1")

        assert self.run(make_backend, scenario) is False  # nothing left running

    def test_cancel_of_an_unknown_request_is_false(self, make_backend: BackendFactory) -> None:
        async def scenario(backend: Backend) -> bool:
            return await backend.cancel("never-started")

        assert self.run(make_backend, scenario) is False

    def test_a_running_request_id_is_refused(self, make_backend: BackendFactory) -> None:
        async def scenario(backend: Backend) -> None:
            stream = backend.generate(request("dup-1", self.long_tokens))
            await anext(stream)
            with pytest.raises(DuplicateRequestError, match="dup-1"):
                await anext(backend.generate(request("dup-1", 3)))
            assert await backend.cancel("dup-1")
            await stream.aclose()  # type: ignore[attr-defined]

        self.run(make_backend, scenario)

    # ------------------------------------------------------------ concurrency

    def test_a_short_request_finishes_while_a_long_one_runs(
        self, make_backend: BackendFactory
    ) -> None:
        """Concurrency without a race: were requests served one after another,
        the short one would wait for all of the long one's tokens."""

        async def scenario(backend: Backend) -> tuple[Finished, bool, GenerationEvent]:
            long = backend.generate(request("long-a", self.long_tokens))
            assert isinstance(await anext(long), Chunk)  # the long one is running
            _, short = await collect(backend.generate(request("short-b", self.short_tokens)))
            still_running = await backend.cancel("long-a")
            events = [event async for event in long]
            return short, still_running, events[-1]

        short, still_running, long_end = self.run(make_backend, scenario)
        assert (short.output_tokens, short.reason) == (self.short_tokens, LENGTH)
        assert still_running is True
        assert isinstance(long_end, Finished)
        assert long_end.reason == CANCELLED

    def test_signals_are_engine_signals(self, make_backend: BackendFactory) -> None:
        async def scenario(backend: Backend) -> EngineSignals:
            return await backend.signals()

        assert isinstance(self.run(make_backend, scenario), EngineSignals)
