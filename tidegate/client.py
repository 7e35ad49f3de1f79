"""The synchronous SDK: :class:`Client` over the broker's gRPC API.

::

    from tidegate import Client, Start

    with Client("127.0.0.1:7400", api_key=key) as client:
        client.publish("chatbot", b"hello", lite="s-1")
        with client.subscribe("chatbot", ["s-1", "s-2"], start=Start.earliest()) as sub:
            for message in sub:
                handle(message)
                sub.ack(message)

Every call is retried on ``UNAVAILABLE`` (server unreachable or draining)
with exponential backoff and jitter (:class:`~tidegate.options.Retry`).
Publishing is safe to retry: each call carries a producer id and sequence
numbers, and the server stores a resent message once (see
:mod:`tidegate.producer`). Subscriptions reconnect by themselves and resume
every lite-topic after the last offset they handed over
(:mod:`tidegate.subscription`). Errors are :mod:`tidegate.errors` classes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import grpc

from broker.proto import broker_pb2 as pb
from broker.proto import broker_pb2_grpc as pb_grpc
from tidegate import compact, wire
from tidegate.aio import AsyncClient
from tidegate.aio_subscription import AsyncSubscription
from tidegate.connect import Connection
from tidegate.errors import (
    CallFailed,
    ClientClosed,
    DeadlineExceeded,
    InvalidArgument,
    from_rpc_error,
)
from tidegate.inference import InferenceClient
from tidegate.inference_values import (
    Completion,
    Failed,
    FirstToken,
    HeldLease,
    LeaseFeedback,
    LeaseGrant,
    LeaseOpened,
    LeaseOrder,
    LeaseRejected,
    LeaseSettled,
    LeaseStop,
    OutputChunk,
    Refused,
    ReplyChunk,
    ReplyEnd,
    ReplyEvent,
    RequestState,
    RequestStatus,
    Stopped,
    SubmitOptions,
    Submitted,
    WorkerHello,
    WorkerReport,
)
from tidegate.lease import LeaseStream
from tidegate.options import ApiKey, Retry, Tls
from tidegate.producer import Lane
from tidegate.publishing import (
    as_bytes,
    chunk_frames,
    outgoing,
    plan_batches,
    refs_of,
    reply_target,
)
from tidegate.session import SessionState
from tidegate.subscription import NoticeHandler, Subscription, log_notice
from tidegate.values import (
    Message,
    Notice,
    Outgoing,
    PublishResult,
    QueueInfo,
    QueueRef,
    ReadResult,
    ServerStatus,
    Start,
)

# The client and the values its callers need, importable from this one module
# (the workers' import rules allow tidegate.client and tidegate.errors only),
# the inference API's among them (tidegate.inference).
__all__ = [
    "ApiKey",
    "AsyncClient",
    "AsyncSubscription",
    "Client",
    "Completion",
    "Failed",
    "FirstToken",
    "HeldLease",
    "InferenceClient",
    "LeaseFeedback",
    "LeaseGrant",
    "LeaseOpened",
    "LeaseOrder",
    "LeaseRejected",
    "LeaseSettled",
    "LeaseStop",
    "LeaseStream",
    "Message",
    "Notice",
    "Outgoing",
    "OutputChunk",
    "PublishResult",
    "QueueInfo",
    "QueueRef",
    "ReadResult",
    "Refused",
    "ReplyChunk",
    "ReplyEnd",
    "ReplyEvent",
    "RequestState",
    "RequestStatus",
    "Retry",
    "ServerStatus",
    "Start",
    "Stopped",
    "SubmitOptions",
    "Submitted",
    "Subscription",
    "Tls",
    "WorkerHello",
    "WorkerReport",
]

log = logging.getLogger("tidegate.client")

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_FEED_DEPTH = 4  # PublishStream frames queued ahead of gRPC (4 x 1 MiB)


class Client:
    """A synchronous connection to one tidegate server; thread-safe.

    ``server``: ``HOST:PORT``. ``api_key``: the tenant's key (kept out of
    every repr and log). ``tls``: TLS settings (None: plaintext).
    ``retry``: how long and how often to retry an unreachable server.
    ``timeout_s``: the deadline of each unary call. ``producer_id``: name
    the producer to keep deduplication across process restarts (see
    :mod:`tidegate.producer`); by default a fresh one per client. ``rng``:
    the source of the backoff's jitter.
    """

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
        self._channel = self._conn.channel()
        self._stub = pb_grpc.BrokerStub(self._channel)
        self._closing = threading.Event()
        self._subscriptions: set[Subscription] = set()
        self._lock = threading.Lock()
        self.retries = 0  # calls tried again after UNAVAILABLE (observability)

    def __repr__(self) -> str:
        return f"Client(server={self._conn.server!r}, closed={self._closing.is_set()})"

    @property
    def server(self) -> str:
        return self._conn.server

    @property
    def producer_id(self) -> str:
        """The base producer id of this client's publishes."""
        return self._conn.lanes.base

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every subscription and the channel; later calls raise ClientClosed."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._lock:
            subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            sub.close()
        self._channel.close()

    def _check_open(self) -> None:
        if self._closing.is_set():
            raise ClientClosed(f"the client of {self._conn.server} is closed")

    # --------------------------------------------------------------- calls

    def _unary(
        self,
        method: str,
        call: Callable[..., Resp],
        request: Req,
        timeout_s: float | None,
    ) -> Resp:
        """One unary call, retried on UNAVAILABLE within the retry policy."""
        conn = self._conn
        backoff = conn.retry.backoff(conn.rng)
        while True:
            self._check_open()
            try:
                return call(request, metadata=conn.metadata, timeout=timeout_s or conn.timeout_s)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc, method=method, server=conn.server)
            self._pause(error, backoff.failed(time.monotonic()))

    def _pause(self, error: CallFailed, delay: float | None) -> None:
        """Wait before a retry, or raise ``error`` when it may not be retried."""
        if not error.retryable or delay is None:
            raise error
        log.debug("retrying in %.3f s: %s", delay, error)
        self.retries += 1
        if self._closing.wait(delay):
            raise ClientClosed(f"the client of {self._conn.server} is closed")

    # ------------------------------------------------------------- publish

    def publish(
        self,
        topic: str,
        body: bytes | bytearray | memoryview | str | Iterable[bytes],
        *,
        lite: str | Sequence[str] | None = None,
        properties: Mapping[str, str] | None = None,
        reply_to: str | QueueRef | None = None,
        timeout_s: float | None = None,
    ) -> PublishResult:
        """Publish one message and return where it was stored.

        ``lite``: a lite-topic name under ``topic`` (or several: one copy,
        an offset in each); None for the parent topic's own queue. ``body``:
        bytes (text is sent as UTF-8), or an iterable of byte chunks for a
        body too large to hold (streamed; such a call is not retried, since
        the chunks cannot be replayed). ``reply_to``: ``"topic/lite"`` where
        a reply should go.
        """
        data = as_bytes(body)
        if data is not None:
            return self.publish_batch(
                [outgoing(topic, data, lite, properties, reply_to)], timeout_s=timeout_s
            )[0]
        if not isinstance(body, Iterable):
            raise InvalidArgument(
                f"body is a {type(body).__name__}; give bytes, text or an iterable of bytes"
            )
        header = outgoing(topic, b"", lite, properties, reply_to)
        lane = self._conn.lanes.take()
        try:
            frames = chunk_frames(header, body, lane.producer_id, lane.next_sequence)
            return self._stream_once(frames, timeout_s)[0]
        finally:
            self._conn.lanes.give(lane, 1)

    def publish_batch(
        self, messages: Iterable[Outgoing], *, timeout_s: float | None = None
    ) -> list[PublishResult]:
        """Publish messages in order; one result per message, in order.

        Small messages go in unary batches (up to 1000 messages, 4 MiB),
        large ones by a stream. Each batch is retried on UNAVAILABLE with the
        same producer sequence, so none is stored twice.
        """
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
                    results += self._publish_stream(plan.messages, lane, sequence, timeout_s)
                else:
                    request = compact.publish_request(plan.messages, lane.producer_id, sequence)
                    response = self._unary("Publish", self._stub.Publish, request, timeout_s)
                    results += compact.publish_results(plan.messages, request, response)
                sent += len(plan.messages)
        finally:
            self._conn.lanes.give(lane, len(batch))
        return results

    def _publish_stream(
        self, messages: list[Outgoing], lane: Lane, sequence: int, timeout_s: float | None
    ) -> list[PublishResult]:
        conn = self._conn
        backoff = conn.retry.backoff(conn.rng)
        while True:
            self._check_open()
            try:
                return self._stream_once(
                    wire.stream_frames(messages, lane.producer_id, sequence), timeout_s
                )
            except CallFailed as error:
                self._pause(error, backoff.failed(time.monotonic()))

    def _stream_once(
        self, frames: Iterator[pb.PublishFrame], timeout_s: float | None
    ) -> list[PublishResult]:
        """One PublishStream call. The frames are made in this thread (so a
        failing chunk iterable raises here) and handed to gRPC through a short
        queue, which bounds what is held in memory."""
        self._check_open()
        feed: queue.Queue[pb.PublishFrame | None] = queue.Queue(maxsize=_FEED_DEPTH)

        def requests() -> Iterator[pb.PublishFrame]:
            while (frame := feed.get()) is not None:
                yield frame

        future = self._stub.PublishStream.future(
            requests(), metadata=self._conn.metadata, timeout=timeout_s
        )
        try:
            for frame in frames:
                if not _put(feed, frame, future):
                    break  # the call ended early: its status says why
        except BaseException:
            future.cancel()  # type: ignore[no-untyped-call]
            raise
        finally:
            _put_end(feed, future)
        try:
            response = future.result()
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method="PublishStream", server=self._conn.server) from None
        except grpc.FutureCancelledError:
            raise ClientClosed("PublishStream was cancelled") from None
        return wire.publish_results(response)

    # ---------------------------------------------------------- subscribe

    def subscribe(
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
    ) -> Subscription:
        """Subscribe to lite-topics of ``topic`` (``lites`` None: its own queue;
        no topic: start empty and :meth:`Subscription.add` later).

        ``start``: where each starts (default: a group's committed position,
        else the latest). ``group``: a consumer group (leases, acks,
        redelivery with attempts); without one it is a plain ordered stream
        resumed by offset. ``buffer``: messages held for the reader at most
        (the credits granted to the server). ``max_batch``: messages per
        frame from the server; ``max_lease`` (groups): messages of one
        lite-topic leased at once, sent back to back in frames (default
        ``max_batch``; a backlog drains faster with several frames' worth, a
        slow worker keeps it small so little waits under its lease).
        ``wait``: return once the server has confirmed the subscriptions (so
        nothing published after the call returns is missed).

        A tenant limit refuses the whole set (``ResourceExhausted`` naming
        ``max_subscriptions`` or ``max_lite_topics``; with ``wait`` this call
        raises it, without, the subscription ends with it). A later
        :meth:`Subscription.add` that a limit refuses raises and adds nothing,
        and the subscription keeps delivering what it holds.
        """
        self._check_open()
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
        sub = Subscription(
            self._stub,
            self._conn,
            state,
            on_notice=on_notice or log_notice,
            on_close=self._forget,
        )
        with self._lock:
            self._subscriptions.add(sub)
        sub.start()
        if wait and change:
            try:
                sub.wait_confirmed(change, None)
            except BaseException:
                sub.close()
                raise
        return sub

    def _forget(self, sub: Subscription) -> None:
        with self._lock:
            self._subscriptions.discard(sub)

    # ------------------------------------------------------- request-reply

    def request(
        self,
        topic: str,
        body: bytes | str,
        *,
        lite: str | Sequence[str] | None = None,
        properties: Mapping[str, str] | None = None,
        task_id: str | None = None,
        timeout_s: float = 30.0,
    ) -> Message:
        """Publish a request with reply-to ``a2a/{task_id}`` and wait for the reply there.

        The reply lite-topic is subscribed before the request is published,
        from its earliest message, so a fast reply is not missed.
        """
        reply = QueueRef("a2a", task_id or uuid.uuid4().hex)
        with self.subscribe(
            reply.topic, [reply.lite_topic], start=Start.earliest(), buffer=1
        ) as sub:
            self.publish(topic, body, lite=lite, properties=properties, reply_to=reply)
            answer = sub.get(timeout=timeout_s)
        if answer is None:
            raise DeadlineExceeded(f"no reply on {reply} within {timeout_s:g} s")
        return answer

    def reply(
        self,
        request: Message,
        body: bytes | str,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Publish ``body`` to the reply-to lite-topic of ``request``."""
        target = reply_target(request)
        return self.publish(target.topic, body, lite=target.lite_topic, properties=properties)

    # --------------------------------------------------------------- reads

    def read(
        self,
        topic: str,
        lite: str = "",
        *,
        from_offset: int = 0,
        max_messages: int = 100,
        timeout_s: float | None = None,
    ) -> ReadResult:
        """Messages of a queue from an offset (chunked bodies left out: see read_body)."""
        ref = QueueRef(topic, lite)
        request = pb.ReadRequest(
            topic=ref.topic,
            lite_topic=ref.lite_topic,
            from_offset=from_offset,
            max_messages=max_messages,
        )
        return wire.read_result(self._unary("Read", self._stub.Read, request, timeout_s))

    def read_body(
        self, topic: str, lite: str, offset: int, *, timeout_s: float | None = None
    ) -> Iterator[bytes]:
        """The body of one message, in pieces of at most 1 MiB (nothing held whole)."""
        self._check_open()
        ref = QueueRef(topic, lite)
        request = pb.ReadBodyRequest(topic=ref.topic, lite_topic=ref.lite_topic, offset=offset)
        call = self._stub.ReadBody(request, metadata=self._conn.metadata, timeout=timeout_s)
        try:
            for chunk in call:
                yield chunk.data
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method="ReadBody", server=self._conn.server) from None
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    def queue_info(self, topic: str, lite: str = "", *, group: str | None = None) -> QueueInfo:
        ref = QueueRef(topic, lite)
        request = pb.QueueInfoRequest(topic=ref.topic, lite_topic=ref.lite_topic, group=group or "")
        return wire.queue_info(self._unary("QueueInfo", self._stub.QueueInfo, request, None))

    def status(self) -> ServerStatus:
        """Who the key belongs to and what the server is (also a cheap reachability check)."""
        response = self._unary("Status", self._stub.Status, pb.StatusRequest(), None)
        return wire.server_status(response)


def _put(
    feed: queue.Queue[pb.PublishFrame | None],
    frame: pb.PublishFrame,
    future: grpc.Future[pb.PublishResponse],
) -> bool:
    """Queue a frame unless the call has ended (then False)."""
    while True:
        try:
            feed.put(frame, timeout=0.05)
        except queue.Full:
            if future.done():
                return False
            continue
        return True


def _put_end(
    feed: queue.Queue[pb.PublishFrame | None], future: grpc.Future[pb.PublishResponse]
) -> None:
    """End the request stream; once the call is over, drop frames gRPC will not take."""
    while True:
        try:
            feed.put(None, timeout=0.05)
        except queue.Full:
            if future.done():
                with contextlib.suppress(queue.Empty):
                    feed.get_nowait()
            continue
        return
