"""The outbox gathers items into reports and never lets an ending overtake its chunks."""

from __future__ import annotations

import asyncio

from tidegate.client import Completion, FirstToken, LeaseFeedback, OutputChunk, Stopped
from workers.outbox import Outbox


def chunk(index: int, size: int = 1) -> OutputChunk:
    return OutputChunk("r1", 1, index, b"x" * size, 1)


def test_everything_gathered_goes_in_one_report_and_the_outbox_empties() -> None:
    async def main() -> None:
        box = Outbox()
        assert box.take() is None
        box.chunk(chunk(0))
        box.first_token(FirstToken("r1", 1))
        box.feedback(LeaseFeedback(gpu_util=0.1))
        box.feedback(LeaseFeedback(gpu_util=0.2))  # only the latest is sent
        box.completion(Completion("r1", 1, 3, 1, "stop"))
        box.credit()
        assert box.wake.is_set()
        report = box.take()
        assert report is not None
        assert [c.index for c in report.chunks] == [0]
        assert report.feedback == LeaseFeedback(gpu_util=0.2)
        assert (report.credits, len(report.completions), len(report.first_tokens)) == (1, 1, 1)
        assert len(box) == 0
        assert not box.wake.is_set()

    asyncio.run(main())


def test_a_report_holds_at_most_max_bytes_and_endings_wait_for_their_chunks() -> None:
    async def main() -> None:
        box = Outbox(max_bytes=10)
        for i in range(3):
            box.chunk(chunk(i, 6))
        box.stopped(Stopped("r1", 1, 3))
        box.credit()
        first = box.take()
        assert first is not None
        assert ([c.index for c in first.chunks], first.stopped, first.credits) == ([0], (), 1)
        assert box.wake.is_set()  # more to send at once
        second = box.take()
        assert second is not None
        assert [c.index for c in second.chunks] == [1]
        third = box.take()
        assert third is not None
        assert ([c.index for c in third.chunks], len(third.stopped)) == ([2], 1)
        assert box.take() is None

    asyncio.run(main())
