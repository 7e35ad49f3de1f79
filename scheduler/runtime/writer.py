"""Group writes: reply chunks, end marks and done records, stored in order, in batches.

Every worker's chunks for every request go through one writer, which keeps
one store write in flight and gathers whatever arrives meanwhile into the
next one. That is group commit one level up: under ``fsync: always`` a
thousand streams cost one fsync per batch, not one per chunk. Order is kept
across batches (one write at a time), so a request's chunks, then its end
mark, land in the order the runtime accepted them, whichever lease sent
them.

A failed write fails every item of its batch and every later one: the store
refuses writes until it is reopened, so the runtime stops serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

from scheduler.runtime.errors import ServingUnavailableError
from scheduler.runtime.store import RequestStore, Write

__all__ = ["Writer"]

log = logging.getLogger("tidegate.scheduler")


class Writer:
    """Batches :class:`Write` items into store writes, one at a time, in order."""

    def __init__(self, store: RequestStore, *, max_batch: int = 4096) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: deque[tuple[Write, asyncio.Future[int]]] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self.batches = 0
        self.items = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler-writer")

    def write(self, items: Sequence[Write]) -> list[asyncio.Future[int]]:
        """Queue ``items``; each future gets the item's offset once it is stored."""
        loop = asyncio.get_running_loop()
        futures = []
        for item in items:
            future: asyncio.Future[int] = loop.create_future()
            if self._failure is not None:
                future.set_exception(self._unavailable())
                future.exception()  # mark retrieved: the caller may drop it
            else:
                self._queue.append((item, future))
            futures.append(future)
        if items:
            self._ready.set()
        return futures

    async def flush(self) -> None:
        """Wait until everything queued so far was written (or the writer failed)."""
        while self._queue and self._task is not None and not self._task.done():
            self._drained.clear()
            self._ready.set()
            await self._drained.wait()

    async def close(self) -> None:
        """Store what is queued, then stop."""
        await self.flush()
        task = self._task
        if task is None:
            return
        self._task = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._fail_all(ServingUnavailableError("the server is stopping"))

    def _unavailable(self) -> ServingUnavailableError:
        return ServingUnavailableError(f"the store failed a write earlier: {self._failure}")

    async def _run(self) -> None:
        queue = self._queue
        while True:
            await self._ready.wait()
            self._ready.clear()
            while queue:
                count = min(len(queue), self._max_batch)
                batch = [queue.popleft() for _ in range(count)]
                try:
                    offsets = await self._store.write([item for item, _ in batch])
                except asyncio.CancelledError:
                    self._settle_failed(batch, ServingUnavailableError("the server is stopping"))
                    raise
                except Exception as exc:
                    log.exception("a reply/record write failed; the runtime stops serving")
                    self._failure = exc
                    self._settle_failed(batch, self._unavailable())
                    self._fail_all(self._unavailable())
                    self._drained.set()
                    return
                self.batches += 1
                self.items += count
                for (_, future), offset in zip(batch, offsets, strict=True):
                    if not future.done():
                        future.set_result(offset)
            self._drained.set()

    @staticmethod
    def _settle_failed(
        batch: list[tuple[Write, asyncio.Future[int]]], error: BaseException
    ) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(error)
                future.exception()

    def _fail_all(self, error: BaseException) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()
