"""The runtime's durable records and reply-message properties, as pure codecs.

Every admitted request is one *submit* record in the server-private queue
``requests`` (the empty namespace, which no tenant can address: a tenant
could otherwise forge admitted requests by publishing there). Its body is
the payload; its properties (strings) are everything else. A request that
leaves for good (completed, cancelled, dropped, failed) gets a *done* record
in the same queue. A restart replays the queue from the committed restart
point: submits without a done record are queued again. (Finished requests'
final views, for Status, have a journal of their own: :mod:`.finished`.)

Reply messages (in the tenant's reply lite-topic) carry ``tidegate.*``
properties, which clients cannot set themselves: which request, which chunk
index, and for the last one how it ended. A restart reads them back to find
where a request's output stands.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "BOOTS_LITE",
    "BOOTS_TOPIC",
    "END",
    "GROUP",
    "REQUESTS_TOPIC",
    "TEXT_BYTES",
    "DoneRecord",
    "ReplyMark",
    "SubmitRecord",
    "bounded_text",
    "chunk_properties",
    "done_properties",
    "end_properties",
    "parse_record",
    "parse_reply",
    "submit_properties",
]

REQUESTS_TOPIC = "requests"  # namespace "": submit and done records
# Namespace "": one record per server start (lease epochs). A lite-topic, so it
# expires when idle instead of pinning the log's head for ever; the numbers
# never go back even then, since a boot number is at least the wall-clock second.
BOOTS_TOPIC = "scheduler"
BOOTS_LITE = "boots"
GROUP = "scheduler"  # the consumer group whose committed offset is the restart point

CHUNK = "chunk"
END = "end"
P_REQUEST = "tidegate.request"
P_CHUNK = "tidegate.chunk"
P_EVENT = "tidegate.event"
P_OUTCOME = "tidegate.outcome"
P_REASON = "tidegate.reason"
P_INPUT = "tidegate.input_tokens"
P_OUTPUT = "tidegate.output_tokens"
P_FINISH = "tidegate.finish_reason"
# The most of a reason or finish reason kept, in UTF-8 bytes: they come from
# workers (a failure's message, an engine's finish reason) and go into the
# end mark, the done record and the final view, whose properties the broker
# bounds (64 KiB each); a longer one would fail the write that ends the
# request, and with it the runtime.
TEXT_BYTES = 4096

_NONE: Mapping[str, str] = MappingProxyType({})


def _no_strings() -> Mapping[str, str]:
    return _NONE


@dataclass(frozen=True, slots=True)
class SubmitRecord:
    """An admitted request as written down (times on the wall clock: they outlive the process)."""

    request_id: str
    tenant: str
    priority: int
    input_tokens: int
    output_tokens: int
    session: str
    reply_topic: str
    reply_lite: str
    reply_from: int  # the reply lite-topic's end at admission
    deadline_wall: float | None
    admitted_at: float
    properties: Mapping[str, str] = field(default_factory=_no_strings)
    idempotency_key: str = ""  # "": none; replay rebuilds the key table from it


@dataclass(frozen=True, slots=True)
class DoneRecord:
    request_id: str
    outcome: str  # completed | cancelled | dropped | failed
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplyMark:
    """The ``tidegate.*`` properties of one reply message."""

    request_id: str
    index: int
    event: str  # chunk | end
    outcome: str = ""


def submit_properties(record: SubmitRecord) -> dict[str, str]:
    out = {
        "kind": "submit",
        "id": record.request_id,
        "tenant": record.tenant,
        "priority": str(record.priority),
        "in": str(record.input_tokens),
        "out": str(record.output_tokens),
        "session": record.session,
        "reply_topic": record.reply_topic,
        "reply_lite": record.reply_lite,
        "reply_from": str(record.reply_from),
        "deadline": "" if record.deadline_wall is None else repr(record.deadline_wall),
        "at": repr(record.admitted_at),
    }
    if record.properties:
        out["props"] = json.dumps(dict(record.properties), separators=(",", ":"))
    if record.idempotency_key:
        out["key"] = record.idempotency_key
    return out


def done_properties(record: DoneRecord) -> dict[str, str]:
    return {
        "kind": "done",
        "id": record.request_id,
        "outcome": record.outcome,
        "reason": record.reason,
    }


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not finite: {text!r}")
    return value


def parse_record(properties: Mapping[str, str]) -> SubmitRecord | DoneRecord | None:
    """The record these properties encode; None for anything else or damaged."""
    try:
        kind = properties.get("kind")
        if kind == "done":
            return DoneRecord(properties["id"], properties["outcome"], properties.get("reason", ""))
        if kind != "submit":
            return None
        deadline = properties.get("deadline", "")
        props_text = properties.get("props")
        user: Mapping[str, str] = _NONE
        if props_text:
            decoded = json.loads(props_text)
            if not isinstance(decoded, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in decoded.items()
            ):
                return None
            user = MappingProxyType(decoded)
        return SubmitRecord(
            request_id=properties["id"],
            tenant=properties["tenant"],
            priority=int(properties["priority"]),
            input_tokens=int(properties["in"]),
            output_tokens=int(properties["out"]),
            session=properties.get("session", ""),
            reply_topic=properties["reply_topic"],
            reply_lite=properties["reply_lite"],
            reply_from=int(properties["reply_from"]),
            deadline_wall=_finite(deadline) if deadline else None,
            admitted_at=_finite(properties["at"]),
            properties=user,
            idempotency_key=properties.get("key", ""),
        )
    except (KeyError, ValueError):
        return None


def bounded_text(text: str, limit: int = TEXT_BYTES) -> str:
    """``text`` if its UTF-8 is at most ``limit`` bytes, else its head cut at a
    character boundary with a note of how much was left out (the whole result
    within ``limit``)."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    note = f" [... {len(raw)} bytes, cut]"
    head = raw[: max(0, limit - len(note))].decode(errors="ignore")
    return head + note


def chunk_properties(request_id: str, index: int) -> dict[str, str]:
    return {P_REQUEST: request_id, P_CHUNK: str(index), P_EVENT: CHUNK}


def end_properties(
    request_id: str,
    index: int,
    outcome: str,
    *,
    reason: str = "",
    usage: tuple[int, int] | None = None,
    finish_reason: str = "",
) -> dict[str, str]:
    out = {P_REQUEST: request_id, P_CHUNK: str(index), P_EVENT: END, P_OUTCOME: outcome}
    if reason:
        out[P_REASON] = reason
    if usage is not None:
        out[P_INPUT] = str(usage[0])
        out[P_OUTPUT] = str(usage[1])
    if finish_reason:
        out[P_FINISH] = finish_reason
    return out


def parse_reply(properties: Mapping[str, str]) -> ReplyMark | None:
    """The mark of a reply message; None for a message the runtime did not write."""
    request_id = properties.get(P_REQUEST)
    event = properties.get(P_EVENT)
    index = properties.get(P_CHUNK)
    if request_id is None or event not in (CHUNK, END) or index is None:
        return None
    try:
        number = int(index)
    except ValueError:
        return None
    return ReplyMark(request_id, number, event, properties.get(P_OUTCOME, ""))
