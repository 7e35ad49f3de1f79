"""PublishStream: messages whose bodies arrive in pieces.

Small messages (bodies up to the store's ``chunk_bytes``) are gathered and
published in batches. A larger body is streamed: the pieces go through a
:class:`Pipe` into a ``publish_batch`` running in the pool, which writes them
to the log as chunk records as they come, so the server never holds a large
body whole; the pipe holds a few pieces and pushes back on the client (gRPC
flow control) while the disk catches up. Order is kept: the gathered small
messages are published before a large one starts.

With a producer id, message i of the stream has sequence ``sequence + i``
(see :mod:`broker.producers`); a cut stream can be resent whole and only the
messages not stored yet are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterator

from broker.errors import FailedPrecondition, InvalidArgument, MessageTooLarge
from broker.hub import Hub, Stored
from broker.producers import check_producer
from broker.proto import broker_pb2 as pb
from broker.types import PublishRequest
from broker.wire import outbound

__all__ = ["Pipe", "StreamPublisher"]

_GATHER_BYTES = 4 * 1024 * 1024
_GATHER_MESSAGES = 1000


class Pipe:
    """Byte pieces from the event loop to one pool thread, at most ``capacity`` queued."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int = 4) -> None:
        self._loop = loop
        self._capacity = capacity
        self._items: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._space = asyncio.Event()
        self._closed = False
        self._abandoned = False
        self._error: BaseException | None = None
        self.total = 0

    async def put(self, piece: bytes) -> None:
        """Queue a piece, waiting while the pipe is full (dropped once abandoned)."""
        self.total += len(piece)
        while True:
            with self._cond:
                if self._abandoned:
                    return
                if len(self._items) < self._capacity:
                    self._items.append(piece)
                    self._cond.notify()
                    return
                self._space.clear()
            await self._space.wait()

    def close(self, error: BaseException | None = None) -> None:
        """No more pieces; with ``error`` the reading thread raises it."""
        with self._cond:
            self._closed = True
            self._error = error
            self._cond.notify_all()

    def abandon(self) -> None:
        """The reader is gone: drop what comes (the loop side must not wait on it)."""
        with self._cond:
            self._abandoned = True
            self._items.clear()
        self._space.set()

    def __iter__(self) -> Iterator[bytes]:
        """Thread side: the pieces, in order, until closed."""
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                if self._items:
                    piece = self._items.popleft()
                elif self._error is not None:
                    raise self._error
                else:
                    return
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._space.set)
            yield piece


class StreamPublisher:
    """State of one PublishStream call."""

    def __init__(self, hub: Hub, tenant: str) -> None:
        self._hub = hub
        self._tenant = tenant
        self._limit = hub.broker.settings.max_message_bytes
        self._threshold = hub.broker.settings.chunk_bytes
        self._producer = ""
        self._first = 0
        self._seen = False
        self._count = 0  # messages begun
        self._requests: list[PublishRequest] = []
        self._stored: list[Stored] = []
        self._gathered: list[PublishRequest] = []
        self._gathered_bytes = 0
        self._gathered_from = 0  # stream index of the first gathered message
        self._header: pb.OutboundMessage | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._pipe: Pipe | None = None
        self._task: asyncio.Task[list[Stored]] | None = None

    async def feed(self, frame: pb.PublishFrame) -> None:
        kind = frame.WhichOneof("frame")
        if kind is None:
            raise InvalidArgument("frame: set one of open, message or body")
        if kind == "open":
            if self._seen:
                raise FailedPrecondition(
                    "open: only the first frame of a PublishStream may be open"
                )
            self._producer = (
                check_producer(frame.open.producer_id) if frame.open.producer_id else ""
            )
            self._first = frame.open.sequence
        elif kind == "message":
            await self._end_message()
            self._header = frame.message
            self._parts = [frame.message.body] if frame.message.body else []
            self._size = len(frame.message.body)
            self._count += 1
            # Validate the header now (names, properties) with an empty body.
            self._check(b"")
            if self._size > self._threshold:
                await self._stream()
        else:
            if self._header is None:
                raise FailedPrecondition("body: a message frame must come before its body frames")
            await self._body(frame.body)
        self._seen = True

    def _check(self, body: bytes) -> PublishRequest:
        assert self._header is not None
        index = self._count - 1
        request = outbound(self._tenant, index, self._header, self._limit)
        return request._replace(body=body)

    async def _body(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self._limit:
            raise MessageTooLarge(self._size, self._limit)
        if self._pipe is not None:
            task = self._task
            if task is not None and task.done():
                task.result()  # raises the failure that stopped the writer
            await self._pipe.put(piece)
            return
        self._parts.append(piece)
        if self._size > self._threshold:
            await self._stream()

    async def _stream(self) -> None:
        """Switch the current message to streaming: flush the gathered ones, start the writer."""
        await self._flush()
        pipe = Pipe(asyncio.get_running_loop())
        request = self._check(b"")._replace(body=pipe)
        self._requests.append(request)
        self._pipe = pipe
        index = self._count - 1
        self._task = asyncio.create_task(
            self._hub.publish(
                self._tenant, [request], producer=self._producer, first=self._first + index
            )
        )
        self._task.add_done_callback(lambda _: pipe.abandon())
        parts, self._parts = self._parts, []
        for part in parts:
            await pipe.put(part)

    async def _end_message(self) -> None:
        if self._header is None:
            return
        if self._pipe is not None and self._task is not None:
            self._pipe.close()
            self._stored += await self._task
            self._pipe = self._task = None
        else:
            request = self._check(b"".join(self._parts))
            if not self._gathered:
                self._gathered_from = self._count - 1
            self._gathered.append(request)
            self._requests.append(request)
            self._gathered_bytes += self._size
            if self._gathered_bytes >= _GATHER_BYTES or len(self._gathered) >= _GATHER_MESSAGES:
                await self._flush()
        self._header = None
        self._parts = []

    async def _flush(self) -> None:
        if not self._gathered:
            return
        gathered, self._gathered = self._gathered, []
        self._gathered_bytes = 0
        self._stored += await self._hub.publish(
            self._tenant,
            gathered,
            producer=self._producer,
            first=self._first + self._gathered_from,
        )

    async def finish(self) -> tuple[list[PublishRequest], list[Stored]]:
        await self._end_message()
        await self._flush()
        if not self._requests:
            raise InvalidArgument("the stream held no message frame: nothing to publish")
        return self._requests, self._stored

    def abort(self) -> None:
        """The call ended early: unblock a writer waiting for pieces."""
        if self._pipe is not None:
            self._pipe.close(FailedPrecondition("the stream ended in the middle of a message body"))
        if self._task is not None:
            self._task.add_done_callback(_consume)


def _consume(task: asyncio.Task[list[Stored]]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an aborted stream's writer fails by design
