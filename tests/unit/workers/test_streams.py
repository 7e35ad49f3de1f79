"""RequestStreams: the producer-task machinery under every backend."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from workers.backends.base import CANCELLED, LENGTH, Chunk, Finished, GenerationRequest, collect
from workers.backends.streams import Emit, Ending, RequestStreams
from workers.errors import BackendFailedError, DuplicateRequestError


def req(rid: str = "r1", **kwargs: object) -> GenerationRequest:
    return GenerationRequest(rid, "hi", max_tokens=10, **kwargs)  # type: ignore[arg-type]


def test_unknown_counts_are_filled_from_the_hint_and_the_chunks() -> None:
    async def produce(emit: Emit) -> Ending:
        emit(Chunk("a", 2))
        emit(Chunk("b", 3))
        return Ending(LENGTH)

    async def scenario() -> Finished:
        streams = RequestStreams("test")
        _, finished = await collect(streams.stream(req(input_tokens_hint=7), produce))
        assert len(streams) == 0
        return finished

    assert asyncio.run(scenario()) == Finished(7, 5, LENGTH)


def test_a_producer_error_is_raised_in_the_consumer() -> None:
    async def produce(emit: Emit) -> Ending:
        emit(Chunk("a"))
        raise BackendFailedError("engine fell over")

    async def scenario() -> list[Chunk]:
        got: list[Chunk] = []

        async def drain() -> None:
            async for event in RequestStreams("test").stream(req(), produce):
                assert isinstance(event, Chunk)
                got.append(event)

        with pytest.raises(BackendFailedError, match="fell over"):
            await drain()
        return got

    assert asyncio.run(scenario()) == [Chunk("a")]


def test_cancel_runs_the_producers_cleanup_and_ends_the_stream() -> None:
    cleaned: list[str] = []

    async def produce(emit: Emit) -> Ending:
        emit(Chunk("a", 2))
        try:
            await asyncio.Event().wait()  # upstream work that never ends by itself
        finally:
            cleaned.append("upstream stopped")
        raise AssertionError("unreachable")

    async def scenario() -> tuple[Finished, bool, bool]:
        streams = RequestStreams("test")
        stream = streams.stream(req(resume_tokens=1, resume_text="x"), produce)
        first = await anext(stream)
        assert first == Chunk("a", 2)
        assert "r1" in streams
        cancelled = await streams.cancel("r1")
        assert cleaned == ["upstream stopped"]  # cancel() waited for the cleanup
        end = await anext(stream)
        assert isinstance(end, Finished)
        return end, cancelled, await streams.cancel("r1")

    end, cancelled, again = asyncio.run(scenario())
    assert end == Finished(0, 2, CANCELLED, resumed_tokens=1)
    assert (cancelled, again) == (True, False)


def test_closing_the_stream_cancels_the_producer_and_frees_the_id() -> None:
    cleaned: list[str] = []

    async def produce(emit: Emit) -> Ending:
        emit(Chunk("a"))
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("stopped")
        raise AssertionError("unreachable")

    async def scenario() -> None:
        streams = RequestStreams("test")
        stream = streams.stream(req(), produce)
        await anext(stream)
        await stream.aclose()
        assert cleaned == ["stopped"]
        assert len(streams) == 0

    asyncio.run(scenario())


def test_a_second_stream_of_a_running_id_is_refused() -> None:
    async def produce(emit: Emit) -> Ending:
        emit(Chunk("a"))
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def scenario() -> None:
        streams = RequestStreams("engine-x")
        first = streams.stream(req(), produce)
        await anext(first)
        with pytest.raises(DuplicateRequestError, match="r1 is already running on engine-x"):
            await anext(streams.stream(req(), produce))
        await streams.cancel_all()
        assert len(streams) == 0
        await first.aclose()

    asyncio.run(scenario())


def test_a_sink_sent_by_the_consumer_gets_later_chunks_in_order_and_none_overtakes() -> None:
    gate = asyncio.Event()

    async def produce(emit: Emit) -> Ending:
        emit(Chunk("a", 1))
        emit(Chunk("b", 2))  # still queued when the sink comes: yielded first
        await gate.wait()
        emit(Chunk("c", 3))
        emit(Chunk("d", 4))
        return Ending(LENGTH)

    async def scenario() -> tuple[list[str], list[str], object]:
        yielded: list[str] = []
        sunk: list[str] = []

        def sink(chunk: Chunk) -> None:
            sunk.append(chunk.text)

        stream = RequestStreams("test").stream(req(), produce)
        event = await anext(stream)
        while isinstance(event, Chunk):
            yielded.append(event.text)
            if len(yielded) == 2:
                gate.set()
            event = await stream.asend(sink)
        with pytest.raises(StopAsyncIteration):
            await stream.asend(sink)
        return yielded, sunk, event

    yielded, sunk, finished = asyncio.run(scenario())
    assert (yielded, sunk) == (["a", "b"], ["c", "d"])
    assert finished == Finished(0, 10, LENGTH)


def test_a_sink_error_is_raised_in_the_consumer_and_a_closed_stream_drops_later_chunks() -> None:
    gate = asyncio.Event()
    after_close = asyncio.Event()

    async def produce(emit: Emit) -> Ending:
        emit(Chunk("a"))
        await gate.wait()
        with contextlib.suppress(ValueError):  # the producer hears of it too, may carry on
            emit(Chunk("b"))
        await after_close.wait()
        emit(Chunk("c"))
        return Ending(LENGTH)

    async def scenario() -> list[str]:
        sunk: list[str] = []

        def sink(chunk: Chunk) -> None:
            sunk.append(chunk.text)
            raise ValueError("the consumer could not take it")

        stream = RequestStreams("test").stream(req(), produce)
        assert await anext(stream) == Chunk("a")
        gate.set()
        with pytest.raises(ValueError, match="could not take it"):
            await stream.asend(sink)
        after_close.set()  # the stream is closed: its producer was cancelled
        await asyncio.sleep(0)
        return sunk

    assert asyncio.run(scenario()) == ["b"]
