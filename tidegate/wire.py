"""Protobuf <-> SDK values. Internal: protobuf goes no further than the SDK's own modules.

The generated code of the wire contract (``broker.proto``) is the only part
of the broker package the SDK imports (import-linter states the exception).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

from broker.proto import broker_pb2 as pb
from tidegate.values import (
    Message,
    Outgoing,
    PublishResult,
    QueueInfo,
    QueueRef,
    ReadResult,
    ServerStatus,
    Start,
    StartKind,
)

__all__ = [
    "PIECE_BYTES",
    "body_frame",
    "header_frame",
    "message",
    "outbound",
    "pieces",
    "publish_request",
    "publish_results",
    "queue_info",
    "read_result",
    "server_status",
    "start_position",
    "stream_frames",
    "stream_open",
    "subscription",
]

PIECE_BYTES = 1024 * 1024  # one body frame of a PublishStream (the server's advice)

_NO_PROPERTIES: Mapping[str, str] = MappingProxyType({})  # shared: most messages have none

_KINDS = {
    StartKind.DEFAULT: pb.StartPosition.DEFAULT,
    StartKind.EARLIEST: pb.StartPosition.EARLIEST,
    StartKind.LATEST: pb.StartPosition.LATEST,
    StartKind.OFFSET: pb.StartPosition.OFFSET,
    StartKind.TIMESTAMP: pb.StartPosition.TIMESTAMP,
}


def outbound(message: Outgoing, body: bytes | None = None) -> pb.OutboundMessage:
    """The message's header (and ``body``, or the message's own body when None)."""
    out = pb.OutboundMessage(
        topic=message.topic,
        lite_topics=message.lite_topics,
        body=message.body if body is None else body,
        reply_to=message.reply_to,
    )
    if message.properties:
        out.properties.update(message.properties)
    return out


def publish_request(
    messages: Sequence[Outgoing], producer_id: str, sequence: int
) -> pb.PublishRequest:
    return pb.PublishRequest(
        messages=[outbound(m) for m in messages], producer_id=producer_id, sequence=sequence
    )


def stream_open(producer_id: str, sequence: int) -> pb.PublishFrame:
    return pb.PublishFrame(open=pb.PublishOpen(producer_id=producer_id, sequence=sequence))


def header_frame(message: Outgoing) -> pb.PublishFrame:
    """A ``message`` frame with an empty body (the pieces follow in ``body`` frames)."""
    return pb.PublishFrame(message=outbound(message, b""))


def body_frame(piece: bytes) -> pb.PublishFrame:
    return pb.PublishFrame(body=piece)


def pieces(body: bytes | bytearray | memoryview, size: int = PIECE_BYTES) -> Iterator[bytes]:
    """``body`` in pieces of at most ``size`` bytes (one piece copied at a time)."""
    view = memoryview(body)
    for at in range(0, len(view), size):
        yield bytes(view[at : at + size])


def stream_frames(
    messages: Sequence[Outgoing], producer_id: str, sequence: int
) -> Iterator[pb.PublishFrame]:
    """The frames of a PublishStream for messages whose bodies are bytes."""
    yield stream_open(producer_id, sequence)
    for message in messages:
        yield header_frame(message)
        for piece in pieces(message.body):
            yield body_frame(piece)


def publish_results(response: pb.PublishResponse) -> list[PublishResult]:
    return [
        PublishResult(
            topic=r.topic,
            lite_topics=tuple(r.lite_topics),
            offsets=tuple(r.offsets),
            timestamp=r.timestamp,
            duplicate=r.duplicate,
            sequence=r.sequence,
            size=r.size,
        )
        for r in response.results
    ]


def start_position(start: Start) -> pb.StartPosition:
    return pb.StartPosition(kind=_KINDS[start.kind], offset=start.offset, timestamp=start.timestamp)


def subscription(ref: QueueRef, start: Start) -> pb.Subscription:
    return pb.Subscription(topic=ref.topic, lite_topic=ref.lite_topic, start=start_position(start))


def message(d: pb.Delivery, body: bytes | None = None) -> Message:
    """A delivery as a value; ``body`` replaces the (empty) body of a chunked one."""
    properties: Mapping[str, str] = dict(d.properties) if d.properties else _NO_PROPERTIES
    return Message(
        topic=d.topic,
        lite_topic=d.lite_topic,
        offset=d.offset,
        body=d.body if body is None else body,
        attempt=d.attempt,
        timestamp=d.timestamp,
        properties=properties,
        reply_to=d.reply_to,
        size=d.size,
        chunked=d.chunked,
        lease_deadline=d.lease_deadline or None,
    )


def run_messages(run: pb.DeliveryRun, start: int = 0) -> list[Message]:
    """The messages of a run of deliveries (see broker.proto), from its ``start``-th."""
    topic, lite, deadline = run.topic, run.lite_topic, run.lease_deadline or None
    offsets = run.offsets[start:]
    attempts = run.attempts[start:] if run.attempts else [0] * len(offsets)
    return [
        Message(
            topic=topic,
            lite_topic=lite,
            offset=offset,
            body=body,
            attempt=attempt,
            timestamp=timestamp,
            properties=_NO_PROPERTIES,
            size=len(body),
            lease_deadline=deadline,
        )
        for offset, timestamp, body, attempt in zip(
            offsets, run.timestamps[start:], run.bodies[start:], attempts, strict=True
        )
    ]


def read_result(response: pb.ReadResponse) -> ReadResult:
    return ReadResult(tuple(message(d) for d in response.messages), response.next_offset)


def queue_info(r: pb.QueueInfoResponse) -> QueueInfo:
    return QueueInfo(
        topic=r.topic,
        lite_topic=r.lite_topic,
        next_offset=r.next_offset,
        min_offset=r.min_offset,
        created=r.created,
        last_active=r.last_active,
        subscribers=r.subscribers,
        ttl_s=r.ttl_s or None,
        committed_offset=r.committed_offset if r.has_committed else None,
    )


def server_status(r: pb.StatusResponse) -> ServerStatus:
    return ServerStatus(
        tenant=r.tenant,
        version=r.version,
        fsync=r.fsync,
        max_message_bytes=r.max_message_bytes,
        max_lite_topics_per_message=r.max_lite_topics_per_message,
        max_read_messages=r.max_read_messages,
        max_attempts=r.max_attempts,
        lite_topics=r.lite_topics,
        max_tenant_lite_topics=r.max_tenant_lite_topics or None,
        subscriptions=r.subscriptions,
        max_subscriptions=r.max_subscriptions or None,
    )
