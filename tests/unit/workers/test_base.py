"""The backend interface's values: what a request may say, and the stream rule."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from scheduler.clock import VirtualClock
from workers.backends import (
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
from workers.backends.simulated import SimulatedBackend, SimulatedConfig
from workers.errors import BackendFailedError


def test_a_request_counts_what_is_left_after_a_resume() -> None:
    r = GenerationRequest("r", "hi", max_tokens=10, resume_text="ab", resume_tokens=4)
    assert r.remaining_tokens == 6
    assert not r.is_chat
    assert GenerationRequest("c", (ChatMessage("user", "hi"),), max_tokens=1).is_chat


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"request_id": ""}, "request_id"),
        ({"max_tokens": 0}, "max_tokens must be >= 1"),
        ({"resume_tokens": 11}, "resume_tokens"),
        ({"resume_tokens": -1}, "resume_tokens"),
        ({"resume_text": "x"}, "resume_tokens=0"),
        ({"prompt": ()}, "no messages"),
        ({"input_tokens_hint": -3}, "input_tokens_hint"),
    ],
)
def test_a_bad_request_names_the_field(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"request_id": "r1", "prompt": "hi", "max_tokens": 10}
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        GenerationRequest(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"temperature": -0.1}, "temperature"), ({"top_p": 0.0}, "top_p")]
)
def test_bad_sampling_names_the_field(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_finished_adds_the_resumed_tokens() -> None:
    assert Finished(5, 7, LENGTH, resumed_tokens=3).total_output_tokens == 10


async def _events(*events: GenerationEvent) -> AsyncIterator[GenerationEvent]:
    for event in events:
        yield event


def test_collect_enforces_one_finished_at_the_end() -> None:
    done = Finished(1, 1, LENGTH)
    chunks, finished = asyncio.run(collect(_events(Chunk("a"), done)))
    assert (chunks, finished) == ([Chunk("a")], done)
    with pytest.raises(BackendFailedError, match="without Finished"):
        asyncio.run(collect(_events(Chunk("a"))))
    with pytest.raises(BackendFailedError, match="after Finished"):
        asyncio.run(collect(_events(done, Chunk("late"))))


def test_backends_satisfy_the_protocol() -> None:
    assert isinstance(SimulatedBackend(SimulatedConfig(), VirtualClock()), Backend)
