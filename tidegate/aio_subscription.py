"""An asyncio subscription: the async twin of :mod:`tidegate.subscription`.

One task owns the stream and reconnects it with backoff; a writer task per
stream writes what :class:`~tidegate.session.SessionState` holds, in order
(grpc.aio takes one write at a time). Everything runs on one event loop, so
the state needs no lock. Acks and nacks are plain methods: they queue the
request and wake the writer. A refused add raises from :meth:`AsyncSubscription.add`
and leaves the stream open, as in the sync twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType

import grpc
from grpc import aio

from broker.proto import broker_pb2 as pb
from broker.proto import broker_pb2_grpc as pb_grpc
from tidegate.connect import Connection
from tidegate.errors import CallFailed, ClientClosed, DeadlineExceeded, Unavailable, from_rpc_error
from tidegate.options import Backoff
from tidegate.publishing import refs_of
from tidegate.session import SessionState
from tidegate.subscription import NoticeHandler, open_refused, refusal_of, tell
from tidegate.values import Message, QueueRef, Start

__all__ = ["AsyncSubscription"]

log = logging.getLogger("tidegate.client")

_Call = aio.StreamStreamCall[pb.SubscribeRequest, pb.SubscribeResponse]


class AsyncSubscription:
    """Messages from many lite-topics (see :class:`tidegate.Subscription`);
    ``async for message in sub``, or ``await sub.get(timeout)``."""

    def __init__(
        self,
        stub: pb_grpc.BrokerAsyncStub,
        conn: Connection,
        state: SessionState,
        *,
        on_notice: NoticeHandler,
        on_close: Callable[[AsyncSubscription], None],
    ) -> None:
        self._stub = stub
        self._conn = conn
        self._state = state
        self._on_notice = on_notice
        self._on_close = on_close
        self._buffer: deque[Message] = deque()
        self._wake = asyncio.Event()  # replaced on every notify: a broadcast
        self._outgoing = asyncio.Event()  # the writer has requests to write
        self._stopping = asyncio.Event()  # close() was called: end waits and backoff
        self._failure: CallFailed | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._call: _Call | None = None
        self.reconnects = 0

    def __repr__(self) -> str:
        return (
            f"AsyncSubscription(server={self._conn.server!r}, group={self._state.group!r}, "
            f"subscriptions={len(self._state.subscriptions())}, closed={self._closed})"
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def _kick(self) -> None:
        self._outgoing.set()

    async def _until(self, wake: asyncio.Event, deadline: float | None) -> bool:
        """Wait for a notify; False once ``deadline`` (monotonic) has passed."""
        if deadline is None:
            await wake.wait()
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(wake.wait(), remaining)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------ reading

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            message = await self.get()
        except ClientClosed:
            raise StopAsyncIteration from None
        assert message is not None
        return message

    async def get(self, timeout: float | None = None) -> Message | None:  # noqa: ASYNC109
        """The next message, or None if none came within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer:
            self._check()
            if not await self._until(self._wake, deadline):
                return None
        message = self._buffer.popleft()
        self._state.taken(message)
        self._kick()
        return message

    # ------------------------------------------------------------ changes

    async def add(
        self,
        topic: str,
        lites: str | Iterable[str] | None = None,
        *,
        start: Start | str | int | None = None,
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """Subscribe to more lite-topics (or move the start of ones held).

        With ``wait``, raises the server's refusal (``ResourceExhausted`` for a
        tenant limit such as ``max_subscriptions``): none of ``lites`` is added,
        the subscription stays open and what it held keeps arriving. Without
        ``wait``, a refusal goes to the notice handler."""
        self._check()
        change = self._state.add(refs_of(topic, lites), Start.of(start), tell=not wait)
        self._kick()
        if wait:
            await self.wait_confirmed(change, timeout_s)

    async def remove(
        self,
        topic: str,
        lites: str | Iterable[str] | None = None,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """Stop receiving from lite-topics. Messages already buffered stay."""
        self._check()
        change = self._state.remove(refs_of(topic, lites))
        self._kick()
        if wait:
            await self.wait_confirmed(change, timeout_s)

    async def wait_confirmed(self, change: int, timeout_s: float | None) -> None:
        give_up = self._conn.retry.give_up_s
        limit = timeout_s if timeout_s is not None else self._conn.timeout_s + (give_up or 0.0)
        deadline = time.monotonic() + limit
        while self._state.confirmed < change:
            self._check()
            if not await self._until(self._wake, deadline):
                raise DeadlineExceeded(
                    f"Subscribe: the server {self._conn.server} did not confirm the "
                    f"subscription change within {limit:g} s"
                )
        refusal = refusal_of(self._state, change)
        if refusal is not None:
            raise refusal
        if self._failure is not None and self._state.open_refusal is not None:
            raise self._failure  # the whole set was refused: the subscription ended

    @property
    def subscriptions(self) -> tuple[QueueRef, ...]:
        return self._state.subscriptions()

    def positions(self) -> dict[QueueRef, int]:
        return self._state.positions()

    @property
    def buffered(self) -> int:
        """Messages received and waiting to be taken (at most ``buffer``)."""
        return len(self._buffer)

    @property
    def duplicates(self) -> int:
        return self._state.duplicates

    # ----------------------------------------------------------- settling

    def ack(self, *messages: Message) -> None:
        """Acknowledge messages (consumer groups; a no-op on a plain stream)."""
        self._check()
        self._state.settle("ack", messages)
        self._kick()

    def nack(self, *messages: Message) -> None:
        self._check()
        self._state.settle("nack", messages)
        self._kick()

    def extend(self, *messages: Message, lease_s: float) -> None:
        self._check()
        self._state.extend((m.ref for m in messages), lease_s)
        self._kick()

    # ---------------------------------------------------------- lifecycle

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, grace_s: float = 2.0) -> None:
        """End the stream; acks sent before still reach the server (the writer
        ends the client's side after them), then after ``grace_s`` it is cancelled."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._notify()
        self._kick()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=grace_s)
            if not task.done():
                if self._call is not None:
                    self._call.cancel()
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._on_close(self)

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosed("the subscription is closed")

    # ------------------------------------------------------- the stream

    async def _run(self) -> None:
        backoff = self._conn.retry.backoff(self._conn.rng)
        try:
            while not self._closed:
                error = await self._one_stream(backoff)
                if error is None or self._closed:
                    return
                delay = backoff.failed(time.monotonic()) if error.retryable else None
                if delay is None:
                    self._fail(error)
                    return
                log.info("Subscribe: reconnecting in %.3f s after: %s", delay, error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
                self.reconnects += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: end the subscription, say why
            log.exception("subscription task failed")
            self._fail(CallFailed(f"Subscribe: the client failed: {type(exc).__name__}: {exc}"))

    async def _one_stream(self, backoff: Backoff) -> CallFailed | None:
        call = self._stub.Subscribe(None, metadata=self._conn.metadata)
        self._call = call
        writer: asyncio.Task[None] | None = None
        error: CallFailed | None = None
        try:
            await call.write(self._state.open_request())
            self._outgoing.set()
            writer = asyncio.create_task(self._write(call))
            while True:
                frame = await call.read()
                if not isinstance(frame, pb.SubscribeResponse):  # aio.EOF: the stream ended
                    error = Unavailable(
                        f"Subscribe: the server {self._conn.server} ended the stream"
                    )
                    break
                messages = self._state.feed(frame)
                notices, self._state.notices = self._state.notices, []
                self._buffer.extend(messages)
                error = open_refused(self._state)
                if error is not None:  # before a waiter sees the change confirmed
                    self._fail(error)
                    break
                backoff.succeeded()
                self._kick()
                self._notify()
                for notice in notices:
                    tell(self._on_notice, notice)
        except grpc.RpcError as exc:
            error = from_rpc_error(exc, method="Subscribe", server=self._conn.server)
        finally:
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            self._state.lost()
            self._call = None
            call.cancel()
        return None if self._closed else error

    async def _write(self, call: _Call) -> None:
        while True:
            await self._outgoing.wait()
            self._outgoing.clear()
            for request in self._state.take_requests():
                await call.write(request)
            if self._closed:
                await call.done_writing()  # the server applies what came first, then ends
                return

    def _fail(self, error: CallFailed) -> None:
        self._failure = error
        self._notify()
