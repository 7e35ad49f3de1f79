"""The asyncio SDK: :class:`AsyncClient`, the twin of :class:`tidegate.Client` on grpc.aio.

::

    async with AsyncClient("127.0.0.1:7400", api_key=key) as client:
        await client.publish("chatbot", b"hello", lite="s-1")
        async with await client.subscribe("chatbot", ["s-1"], start=Start.earliest()) as sub:
            async for message in sub:
                ...

Same rules as the sync client (retries, producer sequences, resume); the
channel is made on first use, inside the running event loop. :class:`Retrying`
is the asyncio clients' one retry loop for unary calls (this client's and
``InferenceClient``'s).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import TypeVar

import grpc
from grpc import aio

from broker.proto import broker_pb2 as pb
from broker.proto import broker_pb2_grpc as pb_grpc
from tidegate import compact, wire
from tidegate.aio_subscription import AsyncSubscription
from tidegate.connect import Connection
from tidegate.errors import (
    CallFailed,
    ClientClosed,
    DeadlineExceeded,
    InvalidArgument,
    from_rpc_error,
)
from tidegate.options import ApiKey, Retry, Tls
from tidegate.publishing import (
    as_bytes,
    outgoing,
    pieces_of,
    plan_batches,
    refs_of,
    reply_target,
)
from tidegate.session import SessionState
from tidegate.subscription import NoticeHandler, log_notice
from tidegate.values import (
    Message,
    Outgoing,
    PublishResult,
    QueueInfo,
    QueueRef,
    ReadResult,
    ServerStatus,
    Start,
)

__all__ = ["AsyncClient", "Retrying"]

log = logging.getLogger("tidegate.client")

Resp = TypeVar("Resp")
FailureOf = Callable[[grpc.RpcError, CallFailed], CallFailed]


class Retrying:
    """One asyncio client's retry loop for unary calls, and whether it is closed.

    A call that fails with a retryable status (UNAVAILABLE) is tried again
    after the backoff of the client's :class:`Retry`, until it gets through or
    the policy gives up. :meth:`close` ends every backoff under way at once
    with ``ClientClosed``, as it does a call that fails because the close
    cancelled it; a closed client starts no call.
    """

    __slots__ = ("_conn", "_sleepers", "closed", "retries")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._sleepers: set[asyncio.Future[None]] = set()
        self.closed = False
        self.retries = 0  # calls tried again (observability)

    def close(self) -> None:
        self.closed = True
        for sleeper in self._sleepers:
            if not sleeper.done():
                sleeper.set_result(None)

    def check_open(self) -> None:
        if self.closed:
            raise ClientClosed(f"the client of {self._conn.server} is closed")

    async def call(
        self,
        method: str,
        call: Callable[[], Awaitable[Resp]],
        *,
        failure: FailureOf | None = None,
    ) -> Resp:
        """``call()`` until it answers; ``failure`` refines the error of a failed try."""
        conn = self._conn
        backoff = conn.retry.backoff(conn.rng)
        while True:
            self.check_open()
            try:
                return await call()
            except grpc.RpcError as exc:
                error = from_rpc_error(exc, method=method, server=conn.server)
                if failure is not None:
                    error = failure(exc, error)
            self.check_open()  # the close cancelled it: say so, not CANCELLED
            await self.pause(error, backoff.failed(time.monotonic()))

    async def pause(self, error: CallFailed, delay: float | None) -> None:
        """Wait ``delay`` before a retry (a close cuts it short), or raise ``error``
        when it may not be retried."""
        if not error.retryable or delay is None:
            raise error
        log.debug("retrying in %.3f s: %s", delay, error)
        self.retries += 1
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[None] = loop.create_future()
        self._sleepers.add(sleeper)
        timer = loop.call_later(delay, _wake, sleeper)
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleepers.discard(sleeper)
        self.check_open()


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)


Body = bytes | bytearray | memoryview | str | Iterable[bytes] | AsyncIterable[bytes]


class AsyncClient:
    """An asyncio connection to one tidegate server (arguments as :class:`tidegate.Client`)."""

    def __init__(
        self,
        server: str,
        *,
        api_key: str | ApiKey | None = None,
        tenant: str | None = None,
        tls: Tls | None = None,
        retry: Retry | None = None,
        timeout_s: float = 30.0,
        producer_id: str | None = None,
        first_sequence: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._conn = Connection.make(
            server,
            api_key=api_key,
            tenant=tenant,
            tls=tls,
            retry=retry,
            timeout_s=timeout_s,
            producer_id=producer_id,
            first_sequence=first_sequence,
            rng=rng,
        )
        self._channel: aio.Channel | None = None
        self._stub_: pb_grpc.BrokerAsyncStub | None = None
        self._retrying = Retrying(self._conn)
        self._subscriptions: set[AsyncSubscription] = set()

    def __repr__(self) -> str:
        return f"AsyncClient(server={self._conn.server!r}, closed={self._retrying.closed})"

    @property
    def retries(self) -> int:
        """Calls tried again after UNAVAILABLE (observability)."""
        return self._retrying.retries

    @property
    def server(self) -> str:
        return self._conn.server

    @property
    def producer_id(self) -> str:
        return self._conn.lanes.base

    @property
    def _stub(self) -> pb_grpc.BrokerAsyncStub:
        self._retrying.check_open()
        if self._stub_ is None:
            self._channel = self._conn.aio_channel()
            self._stub_ = pb_grpc.BrokerStub(self._channel)
        return self._stub_

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._retrying.closed:
            return
        self._retrying.close()
        for sub in list(self._subscriptions):
            await sub.close()
        if self._channel is not None:
            await self._channel.close(None)

    # --------------------------------------------------------------- calls

    async def _unary(self, method: str, call: Callable[[], Awaitable[Resp]]) -> Resp:
        return await self._retrying.call(method, call)

    def _timeout(self, timeout_s: float | None) -> float:
        return timeout_s or self._conn.timeout_s

    # ------------------------------------------------------------- publish

    async def publish(
        self,
        topic: str,
        body: Body,
        *,
        lite: str | Sequence[str] | None = None,
        properties: Mapping[str, str] | None = None,
        reply_to: str | QueueRef | None = None,
        timeout_s: float | None = None,
    ) -> PublishResult:
        """Publish one message (see :meth:`tidegate.Client.publish`); ``body`` may
        also be an async iterable of byte chunks."""
        data = as_bytes(body)
        if data is not None:
            results = await self.publish_batch(
                [outgoing(topic, data, lite, properties, reply_to)], timeout_s=timeout_s
            )
            return results[0]
        if not isinstance(body, Iterable | AsyncIterable):
            raise InvalidArgument(
                f"body is a {type(body).__name__}; give bytes, text or an iterable of bytes"
            )
        header = outgoing(topic, b"", lite, properties, reply_to)
        lane = self._conn.lanes.take()
        try:
            frames = _chunk_frames(header, body, lane.producer_id, lane.next_sequence)
            return (await self._stream_once(frames, timeout_s))[0]
        finally:
            self._conn.lanes.give(lane, 1)

    async def publish_batch(
        self, messages: Iterable[Outgoing], *, timeout_s: float | None = None
    ) -> list[PublishResult]:
        """Publish messages in order (see :meth:`tidegate.Client.publish_batch`)."""
        batch = list(messages)
        if not batch:
            return []
        lane = self._conn.lanes.take()
        sent = 0
        results: list[PublishResult] = []
        try:
            for plan in plan_batches(batch):
                sequence = lane.next_sequence + sent
                if plan.stream:
                    results += await self._publish_stream(
                        plan.messages, lane.producer_id, sequence, timeout_s
                    )
                else:
                    request = compact.publish_request(plan.messages, lane.producer_id, sequence)
                    response = await self._publish_unary(request, timeout_s)
                    results += compact.publish_results(plan.messages, request, response)
                sent += len(plan.messages)
        finally:
            self._conn.lanes.give(lane, len(batch))
        return results

    async def _publish_unary(
        self, request: pb.PublishRequest, timeout_s: float | None
    ) -> pb.PublishResponse:
        return await self._unary(
            "Publish",
            lambda: self._stub.Publish(
                request, metadata=self._conn.metadata, timeout=self._timeout(timeout_s)
            ),
        )

    async def _publish_stream(
        self, messages: list[Outgoing], producer_id: str, sequence: int, timeout_s: float | None
    ) -> list[PublishResult]:
        backoff = self._conn.retry.backoff(self._conn.rng)
        while True:
            try:
                return await self._stream_once(
                    _aiter(wire.stream_frames(messages, producer_id, sequence)), timeout_s
                )
            except CallFailed as error:
                await self._retrying.pause(error, backoff.failed(time.monotonic()))

    async def _stream_once(
        self, frames: AsyncIterator[pb.PublishFrame], timeout_s: float | None
    ) -> list[PublishResult]:
        call = self._stub.PublishStream(None, metadata=self._conn.metadata, timeout=timeout_s)
        try:
            async for frame in frames:
                await call.write(frame)
            await call.done_writing()
            response = await call
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method="PublishStream", server=self._conn.server) from None
        except BaseException:
            call.cancel()
            raise
        return wire.publish_results(response)

    # ---------------------------------------------------------- subscribe

    async def subscribe(
        self,
        topic: str | None = None,
        lites: str | Iterable[str] | None = None,
        *,
        start: Start | str | int | None = None,
        group: str | None = None,
        buffer: int = 1000,
        lease_s: float | None = None,
        max_batch: int | None = None,
        max_lease: int | None = None,
        wait: bool = True,
        on_notice: NoticeHandler | None = None,
    ) -> AsyncSubscription:
        """Subscribe (see :meth:`tidegate.Client.subscribe`; a refused
        :meth:`AsyncSubscription.add` raises and the subscription goes on)."""
        state = SessionState(
            group=group or "",
            lease_s=lease_s,
            max_batch=max_batch,
            max_lease=max_lease,
            window=buffer,
        )
        if topic is None and lites is not None:
            raise InvalidArgument("lites given without a topic: name the topic they belong to")
        refs = refs_of(topic, lites) if topic is not None else []
        change = state.add(refs, Start.of(start))
        sub = AsyncSubscription(
            self._stub,
            self._conn,
            state,
            on_notice=on_notice or log_notice,
            on_close=self._subscriptions.discard,
        )
        self._subscriptions.add(sub)
        sub.start()
        if wait and change:
            try:
                await sub.wait_confirmed(change, None)
            except BaseException:
                await sub.close()
                raise
        return sub

    # ------------------------------------------------------- request-reply

    async def request(
        self,
        topic: str,
        body: bytes | str,
        *,
        lite: str | Sequence[str] | None = None,
        properties: Mapping[str, str] | None = None,
        task_id: str | None = None,
        timeout_s: float = 30.0,
    ) -> Message:
        """Publish a request with reply-to ``a2a/{task_id}`` and wait for the reply."""
        reply = QueueRef("a2a", task_id or uuid.uuid4().hex)
        sub = await self.subscribe(
            reply.topic, [reply.lite_topic], start=Start.earliest(), buffer=1
        )
        async with sub:
            await self.publish(topic, body, lite=lite, properties=properties, reply_to=reply)
            answer = await sub.get(timeout=timeout_s)
        if answer is None:
            raise DeadlineExceeded(f"no reply on {reply} within {timeout_s:g} s")
        return answer

    async def reply(
        self, request: Message, body: bytes | str, *, properties: Mapping[str, str] | None = None
    ) -> PublishResult:
        target = reply_target(request)
        return await self.publish(target.topic, body, lite=target.lite_topic, properties=properties)

    # --------------------------------------------------------------- reads

    async def read(
        self,
        topic: str,
        lite: str = "",
        *,
        from_offset: int = 0,
        max_messages: int = 100,
        timeout_s: float | None = None,
    ) -> ReadResult:
        ref = QueueRef(topic, lite)
        request = pb.ReadRequest(
            topic=ref.topic,
            lite_topic=ref.lite_topic,
            from_offset=from_offset,
            max_messages=max_messages,
        )
        response = await self._unary(
            "Read",
            lambda: self._stub.Read(
                request, metadata=self._conn.metadata, timeout=self._timeout(timeout_s)
            ),
        )
        return wire.read_result(response)

    async def read_body(
        self, topic: str, lite: str, offset: int, *, timeout_s: float | None = None
    ) -> AsyncIterator[bytes]:
        """The body of one message, in pieces of at most 1 MiB."""
        ref = QueueRef(topic, lite)
        request = pb.ReadBodyRequest(topic=ref.topic, lite_topic=ref.lite_topic, offset=offset)
        call = self._stub.ReadBody(request, metadata=self._conn.metadata, timeout=timeout_s)
        try:
            async for chunk in call:
                yield chunk.data
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method="ReadBody", server=self._conn.server) from None
        finally:
            call.cancel()

    async def queue_info(
        self, topic: str, lite: str = "", *, group: str | None = None
    ) -> QueueInfo:
        ref = QueueRef(topic, lite)
        request = pb.QueueInfoRequest(topic=ref.topic, lite_topic=ref.lite_topic, group=group or "")
        response = await self._unary(
            "QueueInfo",
            lambda: self._stub.QueueInfo(
                request, metadata=self._conn.metadata, timeout=self._conn.timeout_s
            ),
        )
        return wire.queue_info(response)

    async def status(self) -> ServerStatus:
        response = await self._unary(
            "Status",
            lambda: self._stub.Status(
                pb.StatusRequest(), metadata=self._conn.metadata, timeout=self._conn.timeout_s
            ),
        )
        return wire.server_status(response)


async def _aiter(frames: Iterable[pb.PublishFrame]) -> AsyncIterator[pb.PublishFrame]:
    for frame in frames:
        yield frame


async def _chunk_frames(
    header: Outgoing,
    chunks: Iterable[object] | AsyncIterable[object],
    producer_id: str,
    sequence: int,
) -> AsyncIterator[pb.PublishFrame]:
    yield wire.stream_open(producer_id, sequence)
    yield wire.header_frame(header)
    index = 0
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            for piece in pieces_of(chunk, index):
                yield wire.body_frame(piece)
            index += 1
    else:
        for chunk in chunks:
            for piece in pieces_of(chunk, index):
                yield wire.body_frame(piece)
            index += 1
