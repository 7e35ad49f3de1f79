"""Publish requests and responses in bulk: the produce path's protobuf work.

A PublishRequest carries up to 10,000 messages, and the servicer used to
spend more time per message turning protobuf into values and results back
into protobuf than the store spends storing it. Two things make it cheap:

* :func:`publish_requests` reads each field of every message with one
  C-level ``map`` pass, checks the names once per distinct value (a batch
  usually names one topic and one lite-topic list) and the sizes with one
  ``max``. Anything it cannot pass in bulk (properties, reply_to, a bad
  name, a body too large) goes through :func:`broker.wire.outbound` message
  by message, which validates exactly as before and raises the same error,
  naming the message's index.
* :func:`encode_response` writes the PublishResponse's bytes itself: the
  fields shared by many results (topic, lite-topics, timestamp, size) are
  encoded once by protobuf as a template, and each result adds only its
  offsets and sequence. Protobuf parsers accept fields in any order, so the
  bytes decode to the very message :func:`build_response` makes.

A compact batch (``PublishRequest.batch``: one topic and lite-topic list,
many bodies) skips most of that: :func:`batch_requests` checks the names
once and the sizes with one ``max``, and makes the broker requests in one
C-level pass, and :func:`encode_batch` answers with the batch's first
offsets instead of a result per message (see broker.proto).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter

from broker.errors import BrokerError, InvalidArgument, MessageTooLarge
from broker.hub import Outcomes, Stored
from broker.proto import broker_pb2 as pb
from broker.types import LITE_PATTERN, PublishRequest, parent_prefix
from broker.wire import outbound

__all__ = [
    "batch_requests",
    "build_response",
    "encode_batch",
    "encode_response",
    "publish_requests",
    "uvarint",
]

_TOPIC = attrgetter("topic")
_LITES = attrgetter("lite_topics")
_BODY = attrgetter("body")
_PROPERTIES = attrgetter("properties")
_REPLY_TO = attrgetter("reply_to")
_NO_PROPERTIES: dict[str, str] = {}

_KNOWN_NAMES = 4096  # validated lite-topic lists remembered across calls
_known: dict[tuple[str, ...], tuple[str, ...]] = {}


class _Slow(Exception):  # noqa: N818 - a signal inside this module, never raised out
    """The bulk checks cannot pass this batch: validate message by message."""


def publish_requests(
    tenant: str, messages: Sequence[pb.OutboundMessage], limit: int
) -> list[PublishRequest]:
    """Validated broker requests of ``messages`` (the rules of :func:`broker.wire.outbound`)."""
    try:
        return _bulk(tenant, messages, limit)
    except _Slow:
        return [outbound(tenant, i, m, limit) for i, m in enumerate(messages)]


def _bulk(tenant: str, messages: Sequence[pb.OutboundMessage], limit: int) -> list[PublishRequest]:
    messages = list(messages)  # one wrapper object per message for all the passes below
    if any(map(_PROPERTIES, messages)) or any(map(_REPLY_TO, messages)):
        raise _Slow
    bodies = list(map(_BODY, messages))
    if max(map(len, bodies)) > limit:
        raise _Slow
    topics = list(map(_TOPIC, messages))
    for topic in set(topics):
        try:
            parent_prefix(tenant, topic)
        except InvalidArgument:
            raise _Slow from None
    names: list[tuple[str, ...]] = []
    append = names.append
    last = None
    current: tuple[str, ...] = ()
    for lites in map(_LITES, messages):
        if lites != last:  # consecutive messages mostly share their list
            current = _lite_names(tuple(lites))
            last = lites
        append(current)
    return list(map(PublishRequest, topics, bodies, names, repeat(_NO_PROPERTIES), repeat(tenant)))


def _lite_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` checked (each matches the rule, none twice); the same tuple object
    for the same list, so the store's per-request checks find it hot."""
    known = _known.get(names)
    if known is not None:
        return known
    for name in names:
        if LITE_PATTERN.fullmatch(name) is None:
            raise _Slow
    if len(set(names)) != len(names):
        raise _Slow
    if len(_known) >= _KNOWN_NAMES:
        _known.clear()  # bounded; refills with what is hot
    _known[names] = names
    return names


# ------------------------------------------------------------ compact batches

_new = tuple.__new__  # PublishRequest instances from zipped fields, all in C


def batch_requests(
    tenant: str, batch: pb.PublishBatch, limit: int
) -> tuple[list[PublishRequest], int, int]:
    """The validated broker requests of a compact ``batch`` (at least one body),
    with the bodies' total and largest size.

    The rules and messages are those of :func:`broker.wire.outbound`, naming
    the batch's fields (``batch.lite_topics[1]``, ``batch.bodies[3]``).
    """
    topic = batch.topic
    try:
        parent_prefix(tenant, topic)
    except InvalidArgument as exc:
        raise InvalidArgument(f"batch: {exc}") from None
    lites = _batch_lites(tuple(batch.lite_topics))
    bodies = list(batch.bodies)
    lengths = list(map(len, bodies))
    largest = max(lengths)
    if largest > limit:
        index = next(i for i, n in enumerate(lengths) if n > limit)
        error = MessageTooLarge(lengths[index], limit)
        error.args = (f"batch.bodies[{index}]: {error}",)
        raise error
    requests: list[PublishRequest] = list(
        map(
            _new,
            repeat(PublishRequest),
            zip(repeat(topic), bodies, repeat(lites), repeat(_NO_PROPERTIES), repeat(tenant)),
        )
    )
    return requests, sum(lengths), largest


def _batch_lites(names: tuple[str, ...]) -> tuple[str, ...]:
    """A batch's lite-topic list checked with :func:`broker.wire.outbound`'s messages
    (remembered like :func:`_lite_names`: one tuple object per list)."""
    try:
        return _lite_names(names)
    except _Slow:
        pass  # say which name and why
    for j, lite in enumerate(names):
        if LITE_PATTERN.fullmatch(lite) is None:
            raise InvalidArgument(
                f"batch.lite_topics[{j}] {lite!r} breaks the lite-topic name rule "
                "1 to 128 characters of [A-Za-z0-9_.:@=+-]"
            )
    twice = next(lite for i, lite in enumerate(names) if lite in names[:i])
    raise InvalidArgument(f"batch.lite_topics lists {twice!r} more than once")


_BATCH_TAG = b"\x12"  # PublishResponse.batch = 2, length-delimited


def encode_batch(requests: Sequence[PublishRequest], outcomes: Outcomes) -> bytes:
    """The serialized PublishResponse of a compact batch (the rule is in broker.proto):
    a result per duplicate, then one PublishBatchResult for the stored rest.

    The stored messages took consecutive offsets in each of their queues
    (one append, in order, under the broker's lock). That is checked, not
    assumed: offsets only grow in a queue, so a first and a last offset
    ``stored - 1`` apart leave no room for anything else between them.
    """
    duplicates, results, first = outcomes
    head = encode_response(requests[: len(duplicates)], duplicates) if duplicates else b""
    if not results:
        answer = pb.PublishBatchResult(duplicates=len(duplicates))
    else:
        firsts = results[0].offsets
        lasts = results[-1].offsets
        stored = len(results)
        if len(firsts) != len(lasts) or any(
            last - at != stored - 1 for at, last in zip(firsts, lasts, strict=True)
        ):
            raise BrokerError(
                f"a batch of {stored} messages was not stored contiguously "
                f"(first offsets {firsts}, last {lasts})"
            )
        answer = pb.PublishBatchResult(
            duplicates=len(duplicates),
            stored=stored,
            first_offsets=firsts,
            timestamp=results[0].timestamp,
            first_sequence=first,
        )
    encoded = answer.SerializeToString()
    return head + _BATCH_TAG + uvarint(len(encoded)) + encoded


# ------------------------------------------------------------------ responses

_ONE = [bytes((i,)) for i in range(128)]
_MORE = [bytes((i | 0x80,)) for i in range(128)]


def uvarint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint."""
    if value < 0x80:
        return _ONE[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_RESULTS_TAG = b"\x0a"  # PublishResponse.results = 1, length-delimited
_OFFSETS_TAG = b"\x1a"  # PublishResult.offsets = 3, packed
_SEQUENCE_TAG = b"\x30"  # PublishResult.sequence = 6, varint


def encode_response(requests: Sequence[PublishRequest], stored: Sequence[Stored]) -> bytes:
    """The serialized PublishResponse of ``requests`` and their outcomes (see the module doc).

    Consecutive results mostly share their template, and a result with one
    offset and no sequence is then the template's bytes and the offset's:
    everything before the offset is cached per template and offset length.
    """
    templates: dict[tuple[object, ...], tuple[bytes, dict[int, bytes]]] = {}
    parts: list[bytes] = []
    append = parts.append
    high = -1
    high_bytes = b""
    last: tuple[object, ...] = ()
    template = b""
    heads: dict[int, bytes] = {}
    for request, (offsets, timestamp, duplicate, sequence) in zip(requests, stored, strict=True):
        topic, body, lites = request[0], request[1], request[2]
        size = len(body) if type(body) is bytes else _size(body)
        if not (
            last
            and lites is last[1]
            and timestamp == last[2]
            and duplicate is last[3]
            and size == last[4]
            and topic == last[0]
        ):
            last = (topic, lites, timestamp, duplicate, size)
            known = templates.get(last)
            if known is None:
                encoded = pb.PublishResult(
                    topic=topic,
                    lite_topics=lites,
                    timestamp=timestamp,
                    duplicate=duplicate,
                    size=size,
                ).SerializeToString()
                known = templates[last] = (encoded, {})
            template, heads = known
        if len(offsets) == 1:
            offset = offsets[0]
            if offset < 0x80:
                packed = _ONE[offset]
            else:  # neighbours share all but the low 7 bits: encode the rest once
                if offset >> 7 != high:
                    high = offset >> 7
                    high_bytes = uvarint(high)
                packed = _MORE[offset & 0x7F] + high_bytes
            if not sequence:
                head = heads.get(len(packed))
                if head is None:
                    item_size = len(template) + 2 + len(packed)
                    head = heads[len(packed)] = b"".join(
                        (
                            _RESULTS_TAG,
                            uvarint(item_size),
                            template,
                            _OFFSETS_TAG,
                            _ONE[len(packed)],
                        )
                    )
                append(head)
                append(packed)
                continue
            item = template + _OFFSETS_TAG + _ONE[len(packed)] + packed
        elif offsets:
            packed = b"".join(map(uvarint, offsets))
            item = template + _OFFSETS_TAG + uvarint(len(packed)) + packed
        else:
            item = template
        if sequence:
            item += _SEQUENCE_TAG + uvarint(sequence)
        append(_RESULTS_TAG)
        append(uvarint(len(item)))
        append(item)
    return b"".join(parts)


def build_response(
    requests: Sequence[PublishRequest], stored: Sequence[Stored]
) -> pb.PublishResponse:
    """The same response as a protobuf object (the reference :func:`encode_response` matches)."""
    response = pb.PublishResponse()
    add = response.results.add
    for request, outcome in zip(requests, stored, strict=True):
        add(
            topic=request.topic,
            lite_topics=request.lite_topics,
            offsets=outcome.offsets,
            timestamp=outcome.timestamp,
            duplicate=outcome.duplicate,
            sequence=outcome.sequence,
            size=_size(request.body),
        )
    return response


def _size(body: object) -> int:
    if isinstance(body, bytes | bytearray):
        return len(body)
    return int(getattr(body, "total", 0))
