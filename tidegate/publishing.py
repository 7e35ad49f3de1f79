"""Publishing rules both clients share: bodies, lite-topic arguments, batch plans.

A batch goes in one unary Publish when its bodies are small; a large body
(above ``UNARY_BODY_BYTES``) or a body given as chunks goes by PublishStream,
in 1 MiB pieces, so neither side holds more than a few pieces of it at once
beyond the caller's own copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from broker.proto import broker_pb2 as pb
from tidegate.connect import UNARY_BODY_BYTES
from tidegate.errors import InvalidArgument
from tidegate.values import Message, Outgoing, QueueRef
from tidegate.wire import PIECE_BYTES, body_frame, header_frame, pieces, stream_open

__all__ = [
    "MAX_BATCH_MESSAGES",
    "Plan",
    "as_bytes",
    "chunk_frames",
    "lites_of",
    "outgoing",
    "pieces_of",
    "plan_batches",
    "refs_of",
    "reply_target",
    "resliced",
]

MAX_BATCH_MESSAGES = 1000  # per unary Publish (the server takes up to 10,000)

BytesLike = bytes | bytearray | memoryview


def as_bytes(body: object) -> bytes | None:
    """``body`` as bytes when it is bytes-like or text (UTF-8); None for chunk iterables."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    return None


def lites_of(lite: str | Sequence[str] | None) -> tuple[str, ...]:
    """The ``lite=`` argument: None (the parent queue), one name, or several."""
    if lite is None:
        return ()
    if isinstance(lite, str):
        return (lite,)
    return tuple(lite)


def refs_of(topic: str, lites: str | Iterable[str] | None) -> list[QueueRef]:
    """Queues named by a topic and lite-topic names (the parent queue for None)."""
    if lites is None:
        return [QueueRef(topic)]
    if isinstance(lites, str):
        return [QueueRef(topic, lites)]
    return [QueueRef(topic, lite) for lite in lites]


def outgoing(
    topic: str,
    body: bytes,
    lite: str | Sequence[str] | None,
    properties: Mapping[str, str] | None,
    reply_to: str | QueueRef | None,
) -> Outgoing:
    return Outgoing(
        topic,
        body,
        lites_of(lite),
        dict(properties or {}),
        str(reply_to) if reply_to is not None else "",
    )


def reply_target(request: Message) -> QueueRef:
    if not request.reply_to:
        raise InvalidArgument(
            f"message {request.ref}@{request.offset} has no reply_to: there is nowhere to reply"
        )
    return QueueRef.parse(request.reply_to)


@dataclass(frozen=True, slots=True)
class Plan:
    stream: bool  # by PublishStream (large bodies) rather than one unary Publish
    messages: list[Outgoing]


def plan_batches(messages: Sequence[Outgoing]) -> list[Plan]:
    """Consecutive groups, order kept: small ones by unary Publish, a run holding a
    large body by PublishStream (which gathers its small neighbours itself)."""
    plans: list[Plan] = []
    group: list[Outgoing] = []
    size = 0
    for message in messages:
        large = message.size > UNARY_BODY_BYTES
        if large:
            if group:
                plans.append(Plan(False, group))
                group, size = [], 0
            if plans and plans[-1].stream:
                plans[-1].messages.append(message)
            else:
                plans.append(Plan(True, [message]))
            continue
        if group and (size + message.size > UNARY_BODY_BYTES or len(group) >= MAX_BATCH_MESSAGES):
            plans.append(Plan(False, group))
            group, size = [], 0
        group.append(message)
        size += message.size
    if group:
        plans.append(Plan(False, group))
    return plans


def resliced(chunks: Iterable[object]) -> Iterator[bytes]:
    """The caller's chunks as pieces of at most 1 MiB (empty ones skipped)."""
    for i, chunk in enumerate(chunks):
        yield from pieces_of(chunk, i)


def pieces_of(chunk: object, index: int) -> Iterator[bytes]:
    """One of the caller's chunks as pieces of at most 1 MiB."""
    data = as_bytes(chunk)
    if data is None:
        raise InvalidArgument(
            f"body chunk {index} is a {type(chunk).__name__}; chunks must be bytes"
        )
    if len(data) <= PIECE_BYTES:
        if data:
            yield data
    else:
        yield from pieces(data)


def chunk_frames(
    header: Outgoing, chunks: Iterable[object], producer_id: str, sequence: int
) -> Iterator[pb.PublishFrame]:
    """The frames of a PublishStream for one message whose body comes in chunks."""
    yield stream_open(producer_id, sequence)
    yield header_frame(header)
    for piece in resliced(chunks):
        yield body_frame(piece)
