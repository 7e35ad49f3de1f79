"""Frozen values of the broker's API and the rules for queue names.

Pure: no I/O, no clock. Names are validated here once, with messages that
name the field, the value and the rule, so every layer above (the gRPC
servicer, the CLI) reports the same thing for the same mistake.

A queue is either a parent topic's own queue (``chatbot``) or a lite-topic
under it (``chatbot/s-1``), optionally inside a tenant namespace. Its storage
key is compact and ordered so that all lite-topics of one parent share a
prefix::

    namespace 0x00 topic [ "/" lite ]

No part may hold 0x00 or ``/`` (the character sets exclude both), so the key
decodes unambiguously.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

from broker.errors import InvalidArgument

__all__ = [
    "DLQ_PREFIX",
    "LITE_PATTERN",
    "Body",
    "BrokerStats",
    "Chunk",
    "ExpireReport",
    "Lease",
    "Message",
    "PublishRequest",
    "PublishResult",
    "QueueInfo",
    "QueueName",
    "TrimReport",
    "check_group",
    "check_lite",
    "check_namespace",
    "check_topic",
    "parent_prefix",
]

TENANT_RULE = "[a-z0-9][a-z0-9_-]{0,62} (or empty for no namespace)"
TOPIC_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
LITE_RULE = "1 to 128 characters of [A-Za-z0-9_.:@=+-]"
GROUP_RULE = TOPIC_RULE

_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LITE = re.compile(r"[A-Za-z0-9_.:@=+-]{1,128}")
LITE_PATTERN = _LITE

# Dead-letter queues are parent queues named "%DLQ%<group>" in the namespace
# of the queue the message died in (RocketMQ's convention). "%" is outside the
# topic character set, so no client can publish to or collide with one.
DLQ_PREFIX = "%DLQ%"

Chunk = bytes | bytearray | memoryview
Body = Chunk | Iterable[Chunk]


def _text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} is {type(value).__name__} {value!r}; it must be a str")
    return value


def check_namespace(namespace: str) -> str:
    if _text("namespace", namespace) and _TENANT.fullmatch(namespace) is None:
        raise InvalidArgument(f"namespace {namespace!r} breaks the tenant name rule {TENANT_RULE}")
    return namespace


def check_topic(topic: str) -> str:
    if _TOPIC.fullmatch(_text("topic", topic)) is None:
        if "/" in topic:
            raise InvalidArgument(
                f"topic {topic!r} holds a '/': give the parent as topic and the part "
                "after the slash as a lite-topic"
            )
        raise InvalidArgument(f"topic {topic!r} breaks the topic name rule {TOPIC_RULE}")
    return topic


def check_lite(lite: str) -> str:
    if _LITE.fullmatch(_text("lite_topic", lite)) is None:
        raise InvalidArgument(f"lite_topic {lite!r} breaks the lite-topic name rule {LITE_RULE}")
    return lite


def check_group(group: str) -> str:
    if _TOPIC.fullmatch(_text("group", group)) is None:
        raise InvalidArgument(f"group {group!r} breaks the consumer group name rule {GROUP_RULE}")
    return group


def _check_dlq_topic(topic: str) -> bool:
    return topic.startswith(DLQ_PREFIX) and _TOPIC.fullmatch(topic[len(DLQ_PREFIX) :]) is not None


@lru_cache(maxsize=4096)
def parent_prefix(namespace: str, topic: str) -> bytes:
    """Validated key prefix ``namespace 0x00 topic`` (cached: hot parents repeat)."""
    check_namespace(namespace)
    check_topic(topic)
    return namespace.encode() + b"\x00" + topic.encode()


@dataclass(frozen=True, slots=True)
class QueueName:
    """A queue: a parent topic's own queue (``lite == ""``) or one of its lite-topics."""

    namespace: str
    topic: str
    lite: str = ""

    def __post_init__(self) -> None:
        check_namespace(self.namespace)
        if not _check_dlq_topic(self.topic):
            check_topic(self.topic)
        if self.lite:
            check_lite(self.lite)

    @classmethod
    def parse(cls, text: str, namespace: str = "") -> QueueName:
        """``"chatbot"`` or ``"chatbot/s-1"`` in ``namespace``."""
        topic, slash, lite = text.partition("/")
        if slash and not lite:
            raise InvalidArgument(f"queue {text!r} ends with '/': a lite-topic name follows it")
        if "/" in lite:
            raise InvalidArgument(
                f"queue {text!r} holds more than one '/': the form is parent or parent/lite"
            )
        return cls(namespace, topic, lite)

    @classmethod
    def dead_letter(cls, namespace: str, group: str) -> QueueName:
        """The dead-letter queue of consumer ``group`` in ``namespace``."""
        return cls(namespace, DLQ_PREFIX + check_group(group))

    @classmethod
    def from_key(cls, key: bytes) -> QueueName:
        """Inverse of :attr:`key`."""
        namespace, _, rest = key.decode().partition("\x00")
        topic, _, lite = rest.partition("/")
        return cls(namespace, topic, lite)

    @property
    def key(self) -> bytes:
        """Compact, ordered storage key (see the module docstring)."""
        base = self.namespace.encode() + b"\x00" + self.topic.encode()
        return base + b"/" + self.lite.encode() if self.lite else base

    @property
    def is_lite(self) -> bool:
        return bool(self.lite)

    @property
    def is_dead_letter(self) -> bool:
        return self.topic.startswith(DLQ_PREFIX)

    def __str__(self) -> str:
        name = f"{self.topic}/{self.lite}" if self.lite else self.topic
        return f"{self.namespace}:{name}" if self.namespace else name


# PublishRequest, PublishResult and Message are made once per message on the
# fast paths (a million lite-topics, hundreds of thousands of appends and
# deliveries a second), so they are NamedTuples: immutable values like the
# frozen dataclasses elsewhere, at a third to a half of the construction cost.
_NO_PROPERTIES: Mapping[str, str] = MappingProxyType({})


class PublishRequest(NamedTuple):
    """One message for :meth:`Broker.publish_batch`.

    With ``lite_topics`` the message is indexed into each ``topic/lite``;
    without, into the parent topic's own queue. ``body`` is bytes or an
    iterable of byte chunks (streamed into chunk records when large).
    """

    topic: str
    body: Body
    lite_topics: tuple[str, ...] = ()
    properties: Mapping[str, str] = _NO_PROPERTIES
    namespace: str = ""


class PublishResult(NamedTuple):
    """Where a message landed.

    ``offsets[i]`` is its offset in the i-th lite-topic of the request, or,
    for a request without lite-topics, the single offset in the parent queue.
    """

    position: int
    timestamp: float
    offsets: tuple[int, ...]


class Message(NamedTuple):
    """A message as read from one queue.

    ``body`` is empty and ``chunked`` True when the body was stored as chunk
    records; stream it with :meth:`Broker.open_body`. ``attempt`` is 0 for
    plain reads and counts deliveries (1, 2, ...) for leased messages.

    A NamedTuple like PublishRequest: one is made per delivered message, and
    a frozen dataclass of nine fields cost a quarter of a consumer's read.
    """

    queue: QueueName
    offset: int
    position: int
    timestamp: float
    properties: Mapping[str, str]
    size: int
    body: bytes
    chunked: bool = False
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """A batch leased to a consumer group; empty when nothing is deliverable."""

    group: str
    queue: QueueName
    messages: tuple[Message, ...]
    deadline: float
    dead_lettered: tuple[int, ...] = ()  # offsets moved to the DLQ by this call


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's registry entry."""

    name: QueueName
    queue_id: int
    next_offset: int
    min_offset: int
    created: float
    last_active: float
    subscribers: int
    ttl_s: float | None


@dataclass(frozen=True, slots=True)
class ExpireReport:
    """What one :meth:`Broker.expire` pass removed.

    ``expired_by_namespace``: the lite-topics removed, per namespace (they
    add up to ``expired_queues``: only lite-topics expire), so that a
    server keeping per-tenant counts subtracts them instead of recounting.
    """

    expired_queues: int
    reclaimed_bytes: int
    retention_bytes: int
    expired_by_namespace: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrimReport:
    """What one :meth:`Broker.trim` did to a queue.

    ``min_offset``: the queue's first kept offset now (reads below it start
    there); ``trimmed``: index entries dropped by this call; ``first_position``:
    the lowest log position the queue still holds (None: it holds nothing).
    Log segments below every queue's first position go at the next expire pass.
    """

    queue: QueueName
    min_offset: int
    trimmed: int
    first_position: int | None


@dataclass(frozen=True, slots=True)
class BrokerStats:
    """A snapshot for metrics (see the package's metrics module)."""

    queues: int
    hot_queues: int
    subscribed_queues: int
    published_messages: int
    log_start: int
    log_end: int
    log_segments: int
    index_covered: int
    index_memory_bytes: int
    counters: Mapping[str, int] = field(default_factory=dict)
