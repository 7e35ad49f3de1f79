"""The unary Publish of one batch plan, in the compact form when it can be.

A plan of messages that all go to one topic and lite-topic list, without
properties or reply_to (what a producer mostly sends), travels as
``PublishRequest.batch``: the destination once and the bodies, answered by
``PublishResponse.batch``, the first offset in each queue (the batch is
stored contiguously). The server then does no per-message protobuf work and
the answer is a few bytes whatever the batch's size. Any other plan, and a
plan of one message, keeps the per-message form. Both give the caller the
same :class:`~tidegate.values.PublishResult` per message.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.proto import broker_pb2 as pb
from tidegate import wire
from tidegate.errors import ServerError
from tidegate.values import Outgoing, PublishResult

__all__ = ["compact_request", "publish_request", "publish_results"]


def compact_request(
    messages: Sequence[Outgoing], producer_id: str, sequence: int
) -> pb.PublishRequest | None:
    """``messages`` as one compact batch, or None when one of them does not fit it."""
    if len(messages) < 2:
        return None
    first = messages[0]
    topic, lites = first.topic, first.lite_topics
    for message in messages:
        if (
            message.topic != topic
            or message.lite_topics != lites
            or message.properties
            or message.reply_to
        ):
            return None
    batch = pb.PublishBatch(topic=topic, lite_topics=lites, bodies=[m.body for m in messages])
    return pb.PublishRequest(batch=batch, producer_id=producer_id, sequence=sequence)


def publish_request(
    messages: Sequence[Outgoing], producer_id: str, sequence: int
) -> pb.PublishRequest:
    """The Publish request of one unary plan: compact when every message fits it."""
    compact = compact_request(messages, producer_id, sequence)
    if compact is not None:
        return compact
    return wire.publish_request(messages, producer_id, sequence)


def publish_results(
    messages: Sequence[Outgoing], request: pb.PublishRequest, response: pb.PublishResponse
) -> list[PublishResult]:
    """One result per message of ``request`` (made from ``messages``), whichever its form."""
    if not request.HasField("batch"):
        return wire.publish_results(response)
    answer = response.batch
    duplicates = answer.duplicates
    if (
        not response.HasField("batch")
        or len(response.results) != duplicates
        or duplicates + answer.stored != len(messages)
        or (answer.stored and len(answer.first_offsets) != max(1, len(messages[0].lite_topics)))
    ):
        raise ServerError(
            f"the answer to a batch of {len(messages)} messages does not account for them "
            f"({len(response.results)} results, batch result {answer.duplicates} duplicates, "
            f"{answer.stored} stored, {len(answer.first_offsets)} first offsets)"
        )
    results = wire.publish_results(response)
    first = messages[0]
    topic, lites = first.topic, first.lite_topics
    firsts = tuple(answer.first_offsets)
    timestamp = answer.timestamp
    sequence = answer.first_sequence
    numbered = bool(request.producer_id)
    single = len(firsts) == 1  # the common case: one queue, no generator per message
    for k, message in enumerate(messages[duplicates:]):
        results.append(
            PublishResult(
                topic,
                lites,
                (firsts[0] + k,) if single else tuple(offset + k for offset in firsts),
                timestamp,
                False,
                sequence + k if numbered else 0,
                len(message.body),
            )
        )
    return results
