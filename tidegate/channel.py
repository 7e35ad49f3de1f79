"""A queue with one consumer on one event loop, whose put never blocks.

The hop every streamed chunk takes (a backend's producer to its run, a
reply stream to its reader), so it is kept to a deque and one future:
``asyncio.Queue.get`` looks the running loop up on every wait, which on
Python 3.11 is a ``getpid`` system call, and was a fifth of a busy worker's
samples.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Channel"]

T = TypeVar("T")


class Channel(Generic[T]):
    """``put`` from the loop's thread (never blocks); ``await get()`` by one reader."""

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._items: deque[T] = deque()
        self._loop = loop  # the reader's loop, found at its first wait when not given
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def get(self) -> T:
        items = self._items
        while not items:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return items.popleft()
