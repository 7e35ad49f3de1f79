"""Gatherer: calls that arrive during a run go together in the next one, each with its outcome."""

from __future__ import annotations

import asyncio

import pytest

from broker.gathering import Gatherer


class Recorder:
    """run_many that records its runs and holds each until released."""

    def __init__(self) -> None:
        self.runs: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.runs.append(items)
        await self.release.wait()
        self.release.clear()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_a_lone_call_runs_at_once() -> None:
    async def main() -> None:
        recorder = Recorder()
        recorder.release.set()
        gatherer = Gatherer(recorder)
        assert await gatherer(4) == 40
        assert recorder.runs == [[4]]

    _run(main())


def test_calls_during_a_run_go_together_and_each_gets_its_outcome() -> None:
    async def main() -> None:
        recorder = Recorder()
        gatherer = Gatherer(recorder)
        first = asyncio.ensure_future(gatherer(0))
        await asyncio.sleep(0)  # the first run starts and waits for release
        rest = [asyncio.ensure_future(gatherer(i)) for i in (1, 2, 4)]
        await asyncio.sleep(0)
        assert recorder.runs == [[0]]
        recorder.release.set()
        assert await first == 0
        await asyncio.sleep(0)
        assert recorder.runs == [[0], [1, 2, 4]]
        recorder.release.set()
        outcomes = await asyncio.gather(*rest, return_exceptions=True)
        assert [str(o) if isinstance(o, BaseException) else o for o in outcomes] == [
            "odd 1",
            20,
            40,
        ]
        assert (gatherer.runs, gatherer.items) == (2, 4)

    _run(main())


def test_a_failed_run_fails_its_calls_only() -> None:
    async def main() -> None:
        calls = 0

        async def flaky(items: list[int]) -> list[int | BaseException]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("disk")
            return list(items)

        gatherer = Gatherer(flaky)
        with pytest.raises(OSError, match="disk"):
            await gatherer(1)
        assert await gatherer(2) == 2

    _run(main())


def test_a_wrong_number_of_outcomes_is_an_error_for_the_callers() -> None:
    async def main() -> None:
        async def short(items: list[int]) -> list[int | BaseException]:
            return []

        gatherer = Gatherer(short)
        with pytest.raises(RuntimeError, match="0 outcomes for 1 items"):
            await gatherer(1)

    _run(main())


def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    async def main() -> None:
        recorder = Recorder()
        gatherer = Gatherer(recorder)
        first = asyncio.ensure_future(gatherer(0))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(gatherer(2))
        kept = asyncio.ensure_future(gatherer(4))
        await asyncio.sleep(0)
        gone.cancel()
        recorder.release.set()
        assert await first == 0
        await asyncio.sleep(0)
        recorder.release.set()
        assert await kept == 40
        assert gone.cancelled()
        assert recorder.runs == [[0], [2, 4]]  # its item still ran: it may be stored

    _run(main())


def test_calls_waiting_on_a_lone_call_that_is_cancelled_still_run() -> None:
    async def main() -> None:
        recorder = Recorder()
        gatherer = Gatherer(recorder)
        lone = asyncio.ensure_future(gatherer(0))
        await asyncio.sleep(0)  # runs on its own, in its own task
        waiting = asyncio.ensure_future(gatherer(4))
        await asyncio.sleep(0)
        lone.cancel()
        await asyncio.sleep(0)
        assert lone.cancelled()
        await asyncio.sleep(0)
        assert recorder.runs == [[0], [4]]
        recorder.release.set()
        assert await waiting == 40
        assert (gatherer.runs, gatherer.items) == (2, 2)

    _run(main())
