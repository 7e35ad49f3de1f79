"""Protobuf <-> broker values for the servicer (only :mod:`broker.service` and
:mod:`broker.publishing_stream` use it; protobuf goes no further).

Validation happens here, once per field, with the field's path in the
message (``messages[3].lite_topics[0]: ...``), so a client can tell which
part of a batch broke which rule.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from broker.errors import InvalidArgument, MessageTooLarge
from broker.proto import broker_pb2 as pb
from broker.session import Batch
from broker.types import LITE_PATTERN, Message, PublishRequest, QueueName, parent_prefix

__all__ = [
    "FRAME_BYTES",
    "PIECE_BYTES",
    "REPLY_TO",
    "RESERVED_PREFIX",
    "Malformed",
    "delivery",
    "frames",
    "outbound",
    "parse_or_mark",
    "queue_of",
    "well_formed",
]

RESERVED_PREFIX = "tidegate."
REPLY_TO = "tidegate.reply_to"
FRAME_BYTES = 2 * 1024 * 1024  # bodies per Subscribe/Read frame (clients take 4 MiB by default)
PIECE_BYTES = 1024 * 1024  # one BodyChunk


M = TypeVar("M", bound=ProtoMessage)

# Where a Message holds what a DeliveryRun takes, for its columns.
_QUEUE, _OFFSET, _TIMESTAMP, _PROPERTIES, _SIZE, _BODY, _CHUNKED, _ATTEMPT = (
    Message._fields.index(name)
    for name in ("queue", "offset", "timestamp", "properties", "size", "body", "chunked", "attempt")
)


class Malformed:
    """Stands for a request whose bytes do not decode, so the servicer can answer
    INVALID_ARGUMENT (a deserializer that raises would make gRPC say INTERNAL)."""

    __slots__ = ("reason", "type_name")

    def __init__(self, type_name: str, reason: str) -> None:
        self.type_name = type_name
        self.reason = reason


def parse_or_mark(cls: type[M]) -> Callable[[bytes], M | Malformed]:
    name = cls.DESCRIPTOR.full_name

    def parse(data: bytes) -> M | Malformed:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(name, str(exc) or "undecodable bytes")

    return parse


def well_formed(request: M | Malformed) -> M:
    if isinstance(request, Malformed):
        raise InvalidArgument(
            f"request: not a valid {request.type_name} message ({request.reason})"
        )
    return request


def _at(where: str, exc: Exception) -> InvalidArgument:
    return InvalidArgument(f"{where}: {exc}" if where else str(exc))


def queue_of(tenant: str, topic: str, lite: str, where: str) -> QueueName:
    """The queue ``topic[/lite]`` in ``tenant``'s namespace; ``where`` prefixes errors."""
    try:
        return QueueName(tenant, topic, lite)
    except InvalidArgument as exc:
        raise _at(where, exc) from None


def outbound(tenant: str, index: int, message: pb.OutboundMessage, limit: int) -> PublishRequest:
    """A validated publish request from ``messages[index]`` (kept lean: it runs per message)."""
    topic = message.topic
    try:
        parent_prefix(tenant, topic)
    except InvalidArgument as exc:
        raise _at(f"messages[{index}]", exc) from None
    lites = tuple(message.lite_topics)
    for j, lite in enumerate(lites):
        if LITE_PATTERN.fullmatch(lite) is None:
            raise InvalidArgument(
                f"messages[{index}].lite_topics[{j}] {lite!r} breaks the lite-topic name rule "
                "1 to 128 characters of [A-Za-z0-9_.:@=+-]"
            )
    if len(lites) > 1 and len(set(lites)) != len(lites):
        twice = next(lite for i, lite in enumerate(lites) if lite in lites[:i])
        raise InvalidArgument(f"messages[{index}].lite_topics lists {twice!r} more than once")
    body = message.body
    if len(body) > limit:
        error = MessageTooLarge(len(body), limit)
        error.args = (f"messages[{index}].body: {error}",)
        raise error
    properties: Mapping[str, str] = {}
    if message.properties or message.reply_to:
        properties = dict(message.properties)
        for key in properties:
            if key.startswith(RESERVED_PREFIX):
                raise InvalidArgument(
                    f"messages[{index}].properties[{key!r}]: keys starting with "
                    f"{RESERVED_PREFIX!r} are reserved for the server"
                )
        if message.reply_to:
            try:
                QueueName.parse(message.reply_to, tenant)
            except InvalidArgument as exc:
                raise _at(f"messages[{index}].reply_to", exc) from None
            properties[REPLY_TO] = message.reply_to
    return PublishRequest(topic, body, lites, properties, tenant)


def delivery(message: Message, deadline: float | None) -> pb.Delivery:
    out = pb.Delivery()
    _fill(out, message, deadline)
    return out


def _fill(out: pb.Delivery, message: Message, deadline: float | None) -> None:
    """Set ``out``'s fields from ``message`` (only the non-default ones: each set costs)."""
    queue = message.queue
    out.topic = queue.topic
    out.lite_topic = queue.lite
    out.offset = message.offset
    out.timestamp = message.timestamp
    out.body = message.body
    out.size = message.size
    if message.attempt:
        out.attempt = message.attempt
    if message.chunked:
        out.chunked = True
    properties = message.properties
    if properties:
        for key, value in properties.items():
            if key == REPLY_TO:
                out.reply_to = value
            else:
                out.properties[key] = value
    if deadline is not None:
        out.lease_deadline = deadline


def frames(
    batch: Batch, max_messages: int, *, compact: bool = False
) -> Iterator[tuple[pb.SubscribeResponse, Message | None]]:
    """Subscribe frames of ``batch``, at most ``max_messages`` deliveries each:
    each frame with the chunked message it ends with, if any. ``compact``:
    a queue's plain messages go as one DeliveryRun (see :func:`_compact`).

    Deliveries are built in place (``messages.add()``), not built apart and
    copied in: a frame carries up to a thousand of them.
    """
    max_messages = max(1, max_messages)  # a frame holds at least one
    if compact:
        yield from _compact(batch, max_messages)
        return
    credits_left = batch.credits_left
    frame = pb.SubscribeResponse(credits_left=credits_left)
    add = frame.messages.add
    size = count = 0
    deadlines = batch.deadlines
    for message in batch.messages:
        _fill(add(), message, deadlines.get(message.queue) if deadlines else None)
        if message.chunked:
            yield frame, message
        else:
            size += message.size
            count += 1
            if size < FRAME_BYTES and count < max_messages:
                continue
            yield frame, None
        frame = pb.SubscribeResponse(credits_left=credits_left)
        add = frame.messages.add
        size = count = 0
    if frame.messages:
        yield frame, None


def _compact(
    batch: Batch, max_messages: int
) -> Iterator[tuple[pb.SubscribeResponse, Message | None]]:
    """:func:`frames` for a client that takes DeliveryRun.

    A batch holds each queue's messages together (one pull per queue). The
    part of a queue's messages that falls in one frame goes as one run when
    all of it is plain (no properties, an inline body), else as Deliveries;
    a queue is in ``messages`` or in ``runs`` of a frame, never both, so its
    order holds for a client that reads ``messages`` first (a queue met again
    in a frame follows its first placement, or starts a new frame where it
    could not). A run is a few list copies into packed fields instead of
    seven field writes per message, on both ends of the wire.
    """
    credits_left = batch.credits_left
    deadlines = batch.deadlines
    messages = batch.messages
    frame = pb.SubscribeResponse(credits_left=credits_left)
    size = count = 0
    as_runs: set[QueueName] = set()
    as_messages: set[QueueName] = set()
    # The fields as columns, once: a piece's checks and a run's fields are
    # then C-level calls over slices, not a Python step per message.
    if not messages:
        return
    columns = tuple(zip(*messages, strict=True))
    queues, sizes, chunks, properties = (
        columns[_QUEUE],
        columns[_SIZE],
        columns[_CHUNKED],
        columns[_PROPERTIES],
    )
    i, n = 0, len(messages)
    while i < n:
        queue = queues[i]
        deadline = deadlines.get(queue) if deadlines else None
        # The piece: this queue's next messages, at most the frame's room of
        # plain ones, ended by a chunked one (which it takes) or by the frame's
        # byte budget (the message that reaches it included).
        j = min(n, i + max_messages - count)
        if queues[i:j].count(queue) != j - i:  # another queue within reach: stop at it
            j = next(x for x in range(i + 1, j) if queues[x] != queue)
        chunked: Message | None = None
        if any(chunks[i:j]):
            j = chunks.index(True, i, j) + 1
            chunked = messages[j - 1]
        ends = list(accumulate(sizes[i : j - 1 if chunked else j], initial=size))[1:]
        over = bisect_left(ends, FRAME_BYTES)
        if over < len(ends):  # the byte budget is reached first: no chunked one in it
            j, chunked = i + over + 1, None
        if taken := ends[: j - i]:  # the plain ones the piece holds
            size = taken[-1]
            count += len(taken)
        full = chunked is not None or size >= FRAME_BYTES or count >= max_messages
        plain = chunked is None and not any(properties[i:j])
        piece = messages[i:j]
        if plain and queue in as_messages:
            plain = False  # stay behind this queue's deliveries in the frame
        elif not plain and queue in as_runs:
            # its run would be read after these: send the frame so far first
            yield frame, None
            frame = pb.SubscribeResponse(credits_left=credits_left)
            as_runs.clear()
            as_messages.clear()
            size = sum(m.size for m in piece if not m.chunked)
            count = sum(1 for m in piece if not m.chunked)
        if plain:
            as_runs.add(queue)
            run = frame.runs.add()
            run.topic = queue.topic
            if queue.lite:
                run.lite_topic = queue.lite
            run.offsets.extend(columns[_OFFSET][i:j])
            run.timestamps.extend(columns[_TIMESTAMP][i:j])
            run.bodies.extend(columns[_BODY][i:j])
            attempts = columns[_ATTEMPT][i:j]
            if any(attempts):
                run.attempts.extend(attempts)
            if deadline is not None:
                run.lease_deadline = deadline
        else:
            as_messages.add(queue)
            add = frame.messages.add
            for message in piece:
                _fill(add(), message, deadline)
        i = j
        if full:
            yield frame, chunked
            frame = pb.SubscribeResponse(credits_left=credits_left)
            as_runs.clear()
            as_messages.clear()
            size = count = 0
    if frame.messages or frame.runs:
        yield frame, None
