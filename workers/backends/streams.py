"""The running requests of one backend: a producer task per request, feeding a queue.

Every backend has the same problem: the work (an HTTP stream, a thread
running ``model.generate``, an engine's output generator, the simulated
fleet) must be stoppable from outside — by :meth:`Backend.cancel`, called
from another task than the one iterating the stream. Cancelling a task is
the one safe way to interrupt an ``await`` in asyncio, so each request's
work runs as its own task (the *producer*), and the caller's ``async for``
drains a queue the producer fills. Cancelling the producer is how a backend
stops upstream work; the producer's cleanup (``except CancelledError`` /
``finally``) is where it tells the engine.

One task per request, not per chunk: the hop per chunk is cheap. The queue
is a :class:`tidegate.channel.Channel` (a deque and one waiter future)
rather than an :class:`asyncio.Queue`: this hop runs once per chunk of
every stream on the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from tidegate.channel import Channel
from workers.backends.base import (
    CANCELLED,
    Chunk,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
)
from workers.errors import DuplicateRequestError

__all__ = ["ChunkSink", "Emit", "Ending", "Producer", "RequestStreams"]

Emit: TypeAlias = Callable[[Chunk], None]
ChunkSink: TypeAlias = Callable[[Chunk], None]  # what a consumer may asend (see stream)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a producer's work ended. None counts: the stream fills them in
    (input: the request's hint; output: the tokens of the chunks emitted)."""

    reason: FinishReason
    input_tokens: int | None = None
    output_tokens: int | None = None


Producer: TypeAlias = Callable[[Emit], Awaitable[Ending]]


@dataclass(frozen=True, slots=True)
class _Error:
    error: BaseException


class _Cancelled:
    pass


_CANCELLED: Final = _Cancelled()
_Item: TypeAlias = Chunk | Ending | _Error | _Cancelled


class RequestStreams:
    """Producer tasks by request id, for one backend (``owner`` names it in errors)."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._tasks

    async def stream(
        self, request: GenerationRequest, producer: Producer
    ) -> AsyncGenerator[GenerationEvent, ChunkSink | None]:
        """Run ``producer`` as the request's task and yield what it emits, then Finished.

        A producer's exception is raised here, in the consumer. A cancelled
        producer ends the stream with ``Finished(reason="cancelled")`` counting
        the tokens delivered so far (what a resume must skip).

        A consumer may ``asend`` a :data:`ChunkSink` in answer to a chunk: once
        every chunk made before has been yielded, later chunks go to the sink
        as the producer emits them, in order, instead of through this stream
        (which then yields only the Finished). That saves the consumer a wake-up
        per chunk. An exception the sink raises is raised here, as if the
        consumer had raised it on a yielded chunk (and at the producer's emit).
        """
        rid = request.request_id
        if rid in self._tasks:
            raise DuplicateRequestError(f"request {rid} is already running on {self.owner}")
        queue: Channel[_Item] = Channel(asyncio.get_running_loop())
        put = queue.put
        sink: ChunkSink | None = None
        delivered = 0

        def emit(chunk: Chunk) -> None:
            nonlocal delivered
            if sink is None:
                put(chunk)
                return
            delivered += chunk.tokens
            try:
                sink(chunk)
            except Exception as exc:
                put(_Error(exc))  # raised in the consumer, ahead of what the producer does
                raise

        async def run() -> None:
            try:
                put(await producer(emit))
            except asyncio.CancelledError:
                put(_CANCELLED)
                raise
            except Exception as exc:  # handed to the consumer, which raises it
                put(_Error(exc))

        task = asyncio.create_task(run(), name=f"{self.owner}:{rid}")
        self._tasks[rid] = task
        hint = request.input_tokens_hint or 0
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Chunk):
                    delivered += item.tokens
                    answer = yield item
                    if answer is not None and sink is None and not queue:
                        sink = answer  # nothing older waits: later chunks may go straight
                    continue
                if isinstance(item, _Error):
                    raise item.error
                if isinstance(item, Ending):
                    yield Finished(
                        input_tokens=hint if item.input_tokens is None else item.input_tokens,
                        output_tokens=delivered
                        if item.output_tokens is None
                        else item.output_tokens,
                        reason=item.reason,
                        resumed_tokens=request.resume_tokens,
                    )
                else:
                    yield Finished(hint, delivered, CANCELLED, resumed_tokens=request.resume_tokens)
                return
        finally:
            sink = None  # the consumer is gone: what is emitted from now on is dropped
            if self._tasks.get(rid) is task:
                del self._tasks[rid]
            if not task.done():
                task.cancel()
                # wait() neither raises the task's CancelledError nor swallows ours
                await asyncio.wait({task})

    async def cancel(self, request_id: str) -> bool:
        """Cancel the request's producer and wait for its cleanup; False if not running."""
        task = self._tasks.pop(request_id, None)
        if task is None or task.done():
            return False
        task.cancel()
        await asyncio.wait({task})
        return True

    async def cancel_all(self) -> None:
        for request_id in list(self._tasks):
            await self.cancel(request_id)
