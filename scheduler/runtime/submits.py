"""Group submits: whole payloads written in batches, one durable write (one fsync) each.

Under ``fsync: always`` every store write waits for the disk; a server that
wrote each admitted request alone would spend its time in fsync queues and a
burst of submits would wait behind one another. The batcher keeps one write
in flight and gathers every submit that arrives meanwhile into the next, so
the cost per request falls as the rate rises. Payloads given in pieces
(SubmitStream) are written alone, as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from scheduler.runtime.errors import ServingUnavailableError
from scheduler.runtime.records import SubmitRecord
from scheduler.runtime.store import Appended, RequestStore

__all__ = ["SubmitBatcher"]


class SubmitBatcher:
    """Batches :meth:`RequestStore.append_submits` calls, one at a time."""

    def __init__(
        self, store: RequestStore, *, max_batch: int = 1024, max_bytes: int = 8 << 20
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._queue: deque[tuple[SubmitRecord, bytes, asyncio.Future[Appended]]] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler-submits")

    def append(self, record: SubmitRecord, payload: bytes) -> asyncio.Future[Appended]:
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            future.set_exception(ServingUnavailableError("the server is stopping"))
            return future
        self._queue.append((record, payload, future))
        self._ready.set()
        return future

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        while self._queue and not task.done():
            self._ready.set()
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while self._queue:
            _, _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(ServingUnavailableError("the server is stopping"))

    def _take(self) -> list[tuple[SubmitRecord, bytes, asyncio.Future[Appended]]]:
        batch = [self._queue.popleft()]
        size = len(batch[0][1])
        while self._queue and len(batch) < self._max_batch:
            size += len(self._queue[0][1])
            if size > self._max_bytes:
                break
            batch.append(self._queue.popleft())
        return batch

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                batch = self._take()
                try:
                    results = await self._store.append_submits([(r, p) for r, p, _ in batch])
                except asyncio.CancelledError:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(ServingUnavailableError("the server is stopping"))
                    raise
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Appended):
                        future.set_result(result)
                    else:
                        future.set_exception(result)
