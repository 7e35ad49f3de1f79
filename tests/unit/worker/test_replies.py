"""The SDK side of replies and refusals: events from properties, order kept, duplicates dropped."""

from __future__ import annotations

import asyncio

import pytest

from tidegate.client import ReplyChunk, ReplyEnd, Submitted
from tidegate.errors import FailedPrecondition, ResourceExhausted
from tidegate.inference import _refusal
from tidegate.inference_values import Refused
from tidegate.inference_wire import reply_event
from tidegate.replies import ReplyWatch

SUBMITTED = Submitted("r1", "chatbot", "s-1", 0, 0, 0.0)


def chunk(index: int, data: bytes = b"x") -> ReplyChunk:
    return ReplyChunk("r1", index, data)


def test_reply_messages_become_chunks_and_an_end() -> None:
    props = {"tidegate.request": "r1", "tidegate.chunk": "2", "tidegate.event": "chunk"}
    assert reply_event("r1", props, b"abc", 7) == ReplyChunk("r1", 2, b"abc", 7)
    end = reply_event(
        "r1",
        {
            "tidegate.chunk": "3",
            "tidegate.event": "end",
            "tidegate.outcome": "completed",
            "tidegate.input_tokens": "5",
            "tidegate.output_tokens": "9",
            "tidegate.finish_reason": "length",
        },
        b"",
        8,
    )
    assert end == ReplyEnd("r1", "completed", 3, 5, 9, "length", "")
    assert reply_event("r1", {"tidegate.request": "r1"}, b"", 0) is None


def test_a_watch_keeps_order_drops_repeats_and_refuses_a_gap() -> None:
    async def main() -> None:
        watch = ReplyWatch(SUBMITTED)
        assert not watch._feed(chunk(0, b"a"))
        assert not watch._feed(chunk(0, b"a"))  # redelivered after a reconnect
        assert not watch._feed(chunk(1, b"b"))
        assert watch._feed(ReplyEnd("r1", "completed", 2))
        events = [event async for event in watch]
        assert [getattr(e, "data", None) for e in events] == [b"a", b"b", None]
        assert watch.duplicates == 1

        gap = ReplyWatch(SUBMITTED)
        gap._feed(chunk(0))
        assert gap._feed(chunk(2))
        assert await gap.next() == chunk(0)
        with pytest.raises(FailedPrecondition, match="gap"):
            await gap.next()

    asyncio.run(main())


class _RefusalError(Exception):  # what _refusal reads of a grpc error
    def __init__(self, trailer: tuple[tuple[str, str], ...]) -> None:
        self._trailer = trailer

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailer


def test_a_refusal_carries_its_reason_and_retry_after() -> None:
    error = ResourceExhausted("Submit failed (RESOURCE_EXHAUSTED): full")
    refused = _refusal(
        _RefusalError(
            (("tidegate-refusal-reason", "tenant_queue_full"), ("retry-after-ms", "250"))
        ),
        error,
    )
    assert isinstance(refused, Refused)
    assert (refused.reason, refused.retry_after_s, refused.code) == (
        "tenant_queue_full",
        0.25,
        "RESOURCE_EXHAUSTED",
    )
    assert _refusal(_RefusalError(()), error) is error  # a size limit, not admission
