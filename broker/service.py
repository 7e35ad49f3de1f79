"""The grpc.aio servicer of ``tidegate.v1.Broker``: protobuf in, values through, protobuf out.

Protobuf types stop here: each RPC validates its request into the broker's
values (every message names the field and the rule), calls the hub, and
turns the results back into protobuf. :data:`STATUS_TABLE` is the one place
where a broker error becomes a gRPC status code; nothing else translates.

Authentication happens at the top of every RPC (:meth:`BrokerService.tenant`):
the key from the call metadata names the tenant, and the tenant's name is
the namespace of every queue the call touches.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import grpc
from grpc import aio

from broker.errors import (
    BrokerError,
    CorruptIndex,
    CorruptLog,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    MessageTooLarge,
    NotFound,
    PermissionDenied,
    StoreClosed,
    Unauthenticated,
)
from broker.hub import Hub
from broker.producers import check_producer
from broker.proto import broker_pb2 as pb
from broker.proto import broker_pb2_grpc as pb_grpc
from broker.publish_wire import (
    batch_requests,
    build_response,
    encode_batch,
    encode_response,
    publish_requests,
)
from broker.publishing_stream import StreamPublisher
from broker.session import Batch, Change, Changed, Notice, Session, Start, StartKind
from broker.store import Broker
from broker.tenancy import KeyRing, presented_key
from broker.types import Message, QueueName, check_group
from broker.wire import (
    FRAME_BYTES,
    PIECE_BYTES,
    delivery,
    frames,
    queue_of,
    well_formed,
)

__all__ = ["STATUS_TABLE", "BrokerService", "status_of"]

log = logging.getLogger("tidegate.broker")

# The one table from error class to status code; the most specific class wins.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (MessageTooLarge, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (StoreClosed, grpc.StatusCode.UNAVAILABLE),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CorruptLog, grpc.StatusCode.DATA_LOSS),
    (CorruptIndex, grpc.StatusCode.DATA_LOSS),
    (BrokerError, grpc.StatusCode.INTERNAL),
)
_BY_CLASS = dict(STATUS_TABLE)

DEFAULT_LEASE_S = 30.0
MAX_LEASE_S = 12 * 3600.0
MAX_BATCH = 1000
MAX_PUBLISH_MESSAGES = 10_000
DEFAULT_READ = 100

R = TypeVar("R")


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message of an error (INTERNAL for anything unplanned)."""
    for cls in type(exc).__mro__:
        code = _BY_CLASS.get(cls)
        if code is not None:
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"


async def _fail(context: aio.ServicerContext[object, object], exc: Exception) -> None:
    """End the RPC with ``exc``'s status; a bare ValueError is a bad argument, a bug INTERNAL."""
    code, message = status_of(_as_broker_error(exc))
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", "RPC", exc_info=exc)
    await context.abort(code, message)


class BrokerService(pb_grpc.BrokerServicer):
    """``tidegate.v1.Broker`` over a :class:`Hub`."""

    def __init__(self, hub: Hub, keys: KeyRing, *, version: str = "0") -> None:
        self.hub = hub
        self.keys = keys
        self.version = version
        self.stopping = False

    def tenant(self, context: aio.ServicerContext[object, object]) -> str:
        if self.stopping:
            raise StoreClosed()
        key, claimed = presented_key(context.invocation_metadata())
        return self.keys.authenticate(key, claimed)

    async def _unary(
        self, context: aio.ServicerContext[object, object], body: Callable[[str], Awaitable[R]]
    ) -> R:
        try:
            return await body(self.tenant(context))
        except Exception as exc:  # CancelledError is not an Exception: it passes through
            await _fail(context, exc)
        raise AssertionError("abort returns by raising")

    # ------------------------------------------------------------- publish

    async def Publish(  # noqa: N802 - the RPC's name
        self, request: pb.PublishRequest, context: aio.ServicerContext[object, object]
    ) -> pb.PublishResponse:
        """The typed form of :meth:`publish_encoded` (the server registers that one)."""
        return pb.PublishResponse.FromString(await self.publish_encoded(request, context))

    async def publish_encoded(
        self, request: pb.PublishRequest, context: aio.ServicerContext[object, object]
    ) -> bytes:
        """Publish, answered with the PublishResponse already serialized (see
        :mod:`broker.publish_wire`: the response is built in bulk, not per field)."""

        async def body(tenant: str) -> bytes:
            well_formed(request)
            if request.HasField("batch"):
                return await self._publish_batch(tenant, request)
            messages = request.messages
            count = len(messages)
            if not 1 <= count <= MAX_PUBLISH_MESSAGES:
                raise InvalidArgument(
                    f"messages holds {count} messages; it must hold 1 to {MAX_PUBLISH_MESSAGES}"
                )
            limit = self.hub.broker.settings.max_message_bytes
            requests = publish_requests(tenant, messages, limit)
            producer = _producer(request.producer_id, request.sequence)
            stored = await self.hub.publish(
                tenant, requests, producer=producer, first=request.sequence
            )
            return encode_response(requests, stored)

        return await self._unary(context, body)

    async def _publish_batch(self, tenant: str, request: pb.PublishRequest) -> bytes:
        """A compact ``PublishRequest.batch``: one destination, many bodies (see broker.proto)."""
        if request.messages:
            raise InvalidArgument(
                "messages and batch are both set; a PublishRequest holds one of them"
            )
        batch = request.batch
        count = len(batch.bodies)
        if not 1 <= count <= MAX_PUBLISH_MESSAGES:
            raise InvalidArgument(
                f"batch.bodies holds {count} messages; it must hold 1 to {MAX_PUBLISH_MESSAGES}"
            )
        limit = self.hub.broker.settings.max_message_bytes
        requests, total, largest = batch_requests(tenant, batch, limit)
        producer = _producer(request.producer_id, request.sequence)
        outcomes = await self.hub.publish_outcomes(
            tenant, requests, producer=producer, first=request.sequence, sizes=(total, largest)
        )
        return encode_batch(requests, outcomes)

    async def PublishStream(  # noqa: N802 - the RPC's name
        self,
        request_iterator: AsyncIterator[pb.PublishFrame],
        context: aio.ServicerContext[object, object],
    ) -> pb.PublishResponse:
        async def body(tenant: str) -> pb.PublishResponse:
            publisher = StreamPublisher(self.hub, tenant)
            try:
                async for frame in request_iterator:
                    await publisher.feed(well_formed(frame))
                requests, stored = await publisher.finish()
            except BaseException:
                publisher.abort()
                raise
            return build_response(requests, stored)

        return await self._unary(context, body)

    # --------------------------------------------------------------- reads

    async def Read(  # noqa: N802 - the RPC's name
        self, request: pb.ReadRequest, context: aio.ServicerContext[object, object]
    ) -> pb.ReadResponse:
        async def body(tenant: str) -> pb.ReadResponse:
            well_formed(request)
            queue = queue_of(tenant, request.topic, request.lite_topic, "")
            limit = self.hub.broker.settings.max_read_messages
            count = request.max_messages or DEFAULT_READ
            if count > limit:
                raise InvalidArgument(f"max_messages is {count}; it must be in [1, {limit}]")
            found = await self.hub.run(self.hub.broker.read, queue, request.from_offset, count)
            response = pb.ReadResponse(next_offset=request.from_offset)
            size = 0
            for message in found:
                size += message.size if not message.chunked else 0
                if response.messages and size > FRAME_BYTES:
                    break
                response.messages.append(delivery(message, None))
                response.next_offset = message.offset + 1
            return response

        return await self._unary(context, body)

    async def ReadBody(  # noqa: N802 - the RPC's name
        self, request: pb.ReadBodyRequest, context: aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.BodyChunk]:
        try:
            tenant = self.tenant(context)
            well_formed(request)
            queue = queue_of(tenant, request.topic, request.lite_topic, "")
            found = await self.hub.run(_exact, self.hub.broker, queue, request.offset)
            async for piece in self.body_pieces(found):
                yield piece
        except Exception as exc:
            await _fail(context, exc)

    async def body_pieces(self, message: Message) -> AsyncIterator[pb.BodyChunk]:
        """The body of a chunked message as BodyChunk frames (one stored chunk in memory)."""
        chunks: Iterator[bytes] = await self.hub.run(self.hub.broker.open_body, message)
        pending: bytes | None = None
        while True:
            chunk = await self.hub.run(next, chunks, None)
            if chunk is None:
                break
            for at in range(0, len(chunk), PIECE_BYTES):
                if pending is not None:
                    yield pb.BodyChunk(data=pending)
                pending = chunk[at : at + PIECE_BYTES]
        yield pb.BodyChunk(data=pending or b"", last=True)

    async def QueueInfo(  # noqa: N802 - the RPC's name
        self, request: pb.QueueInfoRequest, context: aio.ServicerContext[object, object]
    ) -> pb.QueueInfoResponse:
        async def body(tenant: str) -> pb.QueueInfoResponse:
            well_formed(request)
            queue = queue_of(tenant, request.topic, request.lite_topic, "")
            info = await self.hub.run(self.hub.broker.queue_info, queue)
            response = pb.QueueInfoResponse(
                topic=queue.topic,
                lite_topic=queue.lite,
                next_offset=info.next_offset,
                min_offset=info.min_offset,
                created=info.created,
                last_active=info.last_active,
                subscribers=info.subscribers,
                ttl_s=info.ttl_s or 0.0,
            )
            if request.group:
                check_group(request.group)
                committed = await self.hub.run(
                    self.hub.broker.committed_offset, request.group, queue
                )
                if committed is not None:
                    response.has_committed = True
                    response.committed_offset = committed
            return response

        return await self._unary(context, body)

    async def Status(  # noqa: N802 - the RPC's name
        self, request: pb.StatusRequest, context: aio.ServicerContext[object, object]
    ) -> pb.StatusResponse:
        async def body(tenant: str) -> pb.StatusResponse:
            well_formed(request)
            settings = self.hub.broker.settings
            quotas = self.hub.quotas
            limits = quotas.limit(tenant)
            # Quotas count only tenants with a limit; for the rest, Status is
            # rare enough to count the namespace's registry keys on demand.
            if quotas.counts_lite_topics(tenant):
                lite_topics = quotas.lite_topics(tenant)
            else:
                lite_topics = await self.hub.run(self.hub.broker.lite_topic_count, tenant)
            return pb.StatusResponse(
                tenant=tenant,
                version=self.version,
                fsync=settings.fsync.value,
                max_message_bytes=settings.max_message_bytes,
                max_lite_topics_per_message=settings.max_lite_topics,
                max_read_messages=settings.max_read_messages,
                max_attempts=settings.max_attempts,
                lite_topics=lite_topics,
                max_tenant_lite_topics=limits.max_lite_topics or 0,
                subscriptions=quotas.subscriptions(tenant),
                max_subscriptions=limits.max_subscriptions or 0,
            )

        return await self._unary(context, body)

    # ------------------------------------------------------------ subscribe

    async def Subscribe(  # noqa: N802 - the RPC's name
        self,
        request_iterator: AsyncIterator[pb.SubscribeRequest],
        context: aio.ServicerContext[object, object],
    ) -> AsyncIterator[pb.SubscribeResponse]:
        session: Session | None = None
        reader: asyncio.Task[None] | None = None
        try:
            tenant = self.tenant(context)
            first = await anext(aiter(request_iterator), None)
            if first is None:
                return
            well_formed(first)
            opened = first.open if first.HasField("open") else None
            group, lease_s, max_batch, max_lease = _open(opened)
            session = Session(
                self.hub,
                tenant,
                group=group,
                lease_s=lease_s,
                max_batch=max_batch,
                max_lease=max_lease,
            )
            compact = opened is not None and opened.compact
            await session.apply(_change(tenant, first))
            reader = asyncio.create_task(_read_requests(request_iterator, session, tenant))
            while True:
                await session.wake.wait()
                session.wake.clear()
                _check_running(self.stopping)
                for item in session.outbox():
                    yield _outbound_frame(item)
                if reader.done():
                    reader.result()  # raises what ended the reader
                    return  # the client closed its side: the stream is over
                while session.engine_ready:
                    batch = await session.pull()
                    async for frame in self._batch_frames(batch, session.max_batch, compact):
                        yield frame
        except Exception as exc:
            await _fail(context, exc)
        finally:
            if reader is not None:
                reader.cancel()
            if session is not None:
                await session.close()

    async def _batch_frames(
        self, batch: Batch, max_messages: int, compact: bool
    ) -> AsyncIterator[pb.SubscribeResponse]:
        for frame, chunked in frames(batch, max_messages, compact=compact):
            yield frame
            if chunked is not None:
                async for piece in self.body_pieces(chunked):
                    yield pb.SubscribeResponse(body_chunk=piece)


async def _read_requests(
    requests: AsyncIterator[pb.SubscribeRequest], session: Session, tenant: str
) -> None:
    try:
        async for request in requests:
            well_formed(request)
            if request.HasField("open"):
                raise FailedPrecondition(
                    "open: only the first request of a Subscribe stream may carry it"
                )
            await session.apply(_change(tenant, request))
    finally:
        session.wake.set()


def _exact(broker: Broker, queue: QueueName, offset: int) -> Message:
    found = broker.read(queue, offset, 1)
    if not found or found[0].offset != offset:
        raise NotFound(
            f"offset {offset} of {queue} does not exist "
            "(never published, expired or lost to retention)"
        )
    return found[0]


def _check_running(stopping: bool) -> None:
    if stopping:
        raise StoreClosed()


def _as_broker_error(exc: BaseException) -> BaseException:
    if isinstance(exc, ValueError) and not isinstance(exc, BrokerError):
        return InvalidArgument(str(exc))
    return exc


def _producer(producer_id: str, sequence: int) -> str:
    if not producer_id:
        if sequence:
            raise InvalidArgument("sequence is set without producer_id: name the producer")
        return ""
    return check_producer(producer_id)


def _open(request: pb.SubscribeOpen | None) -> tuple[str, float, int, int]:
    """(group, lease_s, max_batch_messages, max_lease_messages) of an open, checked."""
    if request is None:
        return "", DEFAULT_LEASE_S, MAX_BATCH, MAX_BATCH
    group = check_group(request.group) if request.group else ""
    lease_s = request.lease_s or DEFAULT_LEASE_S
    if not (math.isfinite(lease_s) and 0 < lease_s <= MAX_LEASE_S):
        raise InvalidArgument(f"open.lease_s is {lease_s}; it must be in (0, {MAX_LEASE_S:g}]")
    max_batch = request.max_batch_messages or MAX_BATCH
    if max_batch > MAX_BATCH:
        raise InvalidArgument(
            f"open.max_batch_messages is {max_batch}; it must be in [1, {MAX_BATCH}]"
        )
    max_lease = request.max_lease_messages or max_batch
    if max_lease > MAX_BATCH:
        raise InvalidArgument(
            f"open.max_lease_messages is {max_lease}; it must be in [1, {MAX_BATCH}]"
        )
    return group, lease_s, max_batch, max_lease


def _start(where: str, start: pb.StartPosition) -> Start:
    try:
        kind = StartKind(start.kind)
    except ValueError:
        raise InvalidArgument(f"{where}.start.kind is {start.kind}; it must be 0 to 4") from None
    if kind is StartKind.TIMESTAMP and not math.isfinite(start.timestamp):
        raise InvalidArgument(f"{where}.start.timestamp is {start.timestamp}; it must be finite")
    return Start(kind, start.offset, start.timestamp)


def _change(tenant: str, request: pb.SubscribeRequest) -> Change:
    add = tuple(
        (
            queue_of(tenant, s.topic, s.lite_topic, f"add[{i}]"),
            _start(f"add[{i}]", s.start),
        )
        for i, s in enumerate(request.add)
    )
    remove = tuple(
        queue_of(tenant, r.topic, r.lite_topic, f"remove[{i}]")
        for i, r in enumerate(request.remove)
    )
    ack = tuple(
        (queue_of(tenant, s.topic, s.lite_topic, f"ack[{i}]"), tuple(s.offsets))
        for i, s in enumerate(request.ack)
    )
    nack = tuple(
        (queue_of(tenant, s.topic, s.lite_topic, f"nack[{i}]"), tuple(s.offsets))
        for i, s in enumerate(request.nack)
    )
    extend = []
    for i, e in enumerate(request.extend):
        if not (math.isfinite(e.lease_s) and 0 < e.lease_s <= MAX_LEASE_S):
            raise InvalidArgument(
                f"extend[{i}].lease_s is {e.lease_s}; it must be in (0, {MAX_LEASE_S:g}]"
            )
        extend.append((queue_of(tenant, e.topic, e.lite_topic, f"extend[{i}]"), e.lease_s))
    return Change(add, remove, request.credits, ack, nack, tuple(extend))


def _outbound_frame(item: Changed | Notice) -> pb.SubscribeResponse:
    if isinstance(item, Changed):
        changed = pb.SubscriptionsChanged(removed=item.removed, total=item.total)
        for queue, offset in item.started:
            changed.started.append(
                pb.SubscriptionStarted(topic=queue.topic, lite_topic=queue.lite, next_offset=offset)
            )
        if item.refused is not None:
            changed.refused.CopyFrom(_notice(item.refused, None))
            for queue in item.refused_adds:
                changed.refused_adds.append(pb.QueueRef(topic=queue.topic, lite_topic=queue.lite))
        return pb.SubscribeResponse(changed=changed)
    return pb.SubscribeResponse(notice=_notice(item.error, item.queue))


def _notice(error: BrokerError, queue: QueueName | None) -> pb.StreamNotice:
    code, message = status_of(error)
    notice = pb.StreamNotice(code=code.value[0], message=message)
    if queue is not None:
        notice.topic = queue.topic
        notice.lite_topic = queue.lite
    return notice
