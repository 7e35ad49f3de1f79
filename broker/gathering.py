"""Gathering concurrent calls into one: the publish path's group commit.

Each publish call used to cost a thread-pool hop, a log append, a RocksDB
batch, a wake-up of the event loop for its subscribers, and a convoy of GIL
hand-offs between the pool's threads contending for the broker's lock. With
a :class:`Gatherer`, a call that arrives while a run is under way waits, and
every call that waited goes together in the next run: one hop, one append,
one index write for all of them. Under load each run takes what arrived
during the previous one, so the batching adapts to the load with no timer
and adds no delay to a lone call.

Each call gets its own outcome (a value or an exception), so one bad call
does not fail the others; an exception from the run itself fails every call
of that run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Gatherer"]

I = TypeVar("I")  # noqa: E741 - an item, as in the docstring
O = TypeVar("O")  # noqa: E741 - its outcome


class Gatherer(Generic[I, O]):
    """``await gatherer(item)`` runs ``run_many`` over the items gathered meanwhile.

    ``run_many(items)`` returns one outcome per item, in order: a value, or
    the exception that call should raise. It runs at most once at a time.
    """

    def __init__(self, run_many: Callable[[list[I]], Awaitable[list[O | BaseException]]]) -> None:
        self._run_many = run_many
        self._waiting: list[tuple[I, asyncio.Future[O]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps only weak refs
        self.runs = 0  # how many runs so far (for tests and stats)
        self.items = 0  # how many items they held

    async def __call__(self, item: I) -> O:
        if not self._running:
            return await self._alone(item)
        future: asyncio.Future[O] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        return await future

    async def _alone(self, item: I) -> O:
        """Nothing runs: this call's run is its own, in its own task (no drain
        task, no future: one acknowledged publish at a time is this path).
        Calls that arrive meanwhile wait for the drain started afterwards."""
        self._running = True
        self.runs += 1
        self.items += 1
        try:
            outcome = _checked(await self._run_many([item]), 1)[0]
        finally:
            if self._waiting:
                self._task = asyncio.get_running_loop().create_task(self._drain())
            else:
                self._running = False
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        try:
            while self._waiting:
                gathered, self._waiting = self._waiting, []
                self.runs += 1
                self.items += len(gathered)
                try:
                    outcomes = _checked(
                        await self._run_many([item for item, _ in gathered]), len(gathered)
                    )
                except asyncio.CancelledError:
                    for _, future in [*gathered, *self._waiting]:
                        future.cancel()
                    self._waiting = []
                    raise
                except Exception as exc:  # every waiter of the run gets it
                    for _, future in gathered:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), outcome in zip(gathered, outcomes, strict=True):
                    if future.done():
                        continue  # its caller was cancelled
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._running = False
            self._task = None


def _checked(outcomes: list[O | BaseException], count: int) -> list[O | BaseException]:
    if len(outcomes) != count:
        raise RuntimeError(f"run_many gave {len(outcomes)} outcomes for {count} items")
    return outcomes
