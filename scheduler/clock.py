"""Clocks: where the runtime gets ``now`` and how it waits.

The policy core never reads a clock; whoever drives it does, through this one
protocol. The server uses :class:`MonotonicClock`; the simulator and the
runtime's tests use :class:`VirtualClock`, whose time moves only when the
caller says so, so a test of timeouts, leases or reload polling runs in
microseconds and never sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "MonotonicClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """Seconds on a clock that never goes backwards, and a way to wait on it."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "MonotonicClock()"


class VirtualClock:
    """A clock that moves only by :meth:`advance` or :meth:`jump`.

    ``sleep`` parks the calling task until the clock reaches its deadline;
    moving the clock wakes every sleeper whose deadline has come, earliest
    first. The woken tasks run when the event loop next gets control (the
    caller typically does ``await asyncio.sleep(0)`` or awaits the work it is
    testing). Without an event loop the clock is still useful as a plain
    settable ``now`` (the simulator uses it that way).
    """

    __slots__ = ("_now", "_seq", "_sleepers")

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"clock start must be finite (got {start!r})")
        self._now = float(start)
        self._seq = itertools.count()  # heap tie-break: equal deadlines wake in sleep order
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            # Still a scheduling point, as asyncio.sleep(0) is.
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0) and wake the sleepers now due."""
        if not seconds >= 0 or not math.isfinite(seconds):
            raise ValueError(f"advance needs a finite number of seconds >= 0 (got {seconds!r})")
        self._set(self._now + seconds)

    def jump(self, to: float) -> None:
        """Set the clock to the absolute time ``to`` (never earlier than now)."""
        if not math.isfinite(to) or to < self._now:
            raise ValueError(f"jump target must be finite and >= now={self._now!r} (got {to!r})")
        self._set(float(to))

    def next_deadline(self) -> float | None:
        """The earliest time a sleeper waits for, or None when nobody sleeps.

        Lets a test "autojump": advance straight to the next deadline when
        everything else is blocked.
        """
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    @property
    def sleepers(self) -> int:
        """How many tasks are parked in :meth:`sleep`."""
        self._drop_cancelled()
        return sum(1 for _, _, f in self._sleepers if not f.done())

    def _set(self, to: float) -> None:
        self._now = to
        while self._sleepers and self._sleepers[0][0] <= to:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():  # a cancelled sleeper's future is already done
                future.set_result(None)

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r})"
