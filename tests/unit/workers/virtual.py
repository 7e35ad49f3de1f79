"""Run a coroutine on a VirtualClock without sleeping: autojump to the next deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from scheduler.clock import VirtualClock

T = TypeVar("T")

SETTLE_ROUNDS = 50  # scheduling points that let every ready task run before time moves


async def settle() -> None:
    for _ in range(SETTLE_ROUNDS):
        await asyncio.sleep(0)


async def autojump(clock: VirtualClock, main: Coroutine[Any, Any, T], limit_s: float = 3600) -> T:
    """Run ``main``; whenever every task is parked on the clock, jump to the next deadline."""
    task = asyncio.ensure_future(main)
    while not task.done():
        await settle()
        if task.done():
            break
        deadline = clock.next_deadline()
        if deadline is None:
            task.cancel()
            raise AssertionError("deadlock: tasks wait, but nobody sleeps on the clock")
        if deadline > limit_s:
            task.cancel()
            raise AssertionError(f"virtual time ran past {limit_s}s")
        clock.jump(deadline)
    return task.result()
