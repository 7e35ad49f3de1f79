"""The SDK's values: what goes out, what comes back, where a subscription starts.

Plain frozen dataclasses; protobuf stays inside :mod:`tidegate.wire`.
Names are checked here with the server's own rules (see the .proto), so a bad
name fails at once with :class:`~tidegate.errors.InvalidArgument` instead of
ending a whole subscription stream on the server.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tidegate.errors import InvalidArgument

__all__ = [
    "LITE_RULE",
    "Message",
    "Notice",
    "Outgoing",
    "PublishResult",
    "QueueInfo",
    "QueueRef",
    "ReadResult",
    "ServerStatus",
    "Start",
    "StartKind",
    "check_lite",
    "is_lite",
]

_TOPIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LITE = re.compile(r"[A-Za-z0-9_.:@=+-]{1,128}")
LITE_RULE = "1 to 128 characters of [A-Za-z0-9_.:@=+-]"
DLQ_PREFIX = "%DLQ%"  # dead-letter queues: "%DLQ%<group>", readable, not publishable


def check_topic(topic: str, *, where: str = "topic") -> str:
    name = topic
    if isinstance(topic, str) and topic.startswith(DLQ_PREFIX):
        name = topic[len(DLQ_PREFIX) :]
    if not isinstance(name, str) or _TOPIC.fullmatch(name) is None:
        raise InvalidArgument(
            f"{where} {topic!r} breaks the topic name rule: 1 to 64 characters of "
            "[A-Za-z0-9_.-], starting with a letter or digit"
        )
    return topic


def is_lite(name: object) -> bool:
    """Whether ``name`` keeps the lite-topic name rule (:data:`LITE_RULE`)."""
    return isinstance(name, str) and _LITE.fullmatch(name) is not None


def check_lite(lite: str, *, where: str = "lite_topic") -> str:
    if not is_lite(lite):
        raise InvalidArgument(f"{where} {lite!r} breaks the lite-topic name rule: {LITE_RULE}")
    return lite


@dataclass(frozen=True, slots=True, order=True)
class QueueRef:
    """A queue: ``topic/lite_topic``, or the parent topic's own queue when ``lite_topic`` is ""."""

    topic: str
    lite_topic: str = ""

    def __post_init__(self) -> None:
        check_topic(self.topic)
        if self.lite_topic:
            check_lite(self.lite_topic)

    @classmethod
    def parse(cls, text: str) -> QueueRef:
        """``"chatbot/s-1"`` -> ``QueueRef("chatbot", "s-1")``; ``"chatbot"`` -> the parent."""
        topic, _, lite = text.partition("/")
        return cls(topic, lite)

    def __str__(self) -> str:
        return f"{self.topic}/{self.lite_topic}" if self.lite_topic else self.topic


class StartKind(enum.Enum):
    DEFAULT = "default"  # a group's committed position, else earliest; no group: latest
    EARLIEST = "earliest"  # the first message the queue still holds
    LATEST = "latest"  # only messages published after the subscription starts
    OFFSET = "offset"  # a given offset (clamped to what the queue holds)
    TIMESTAMP = "timestamp"  # the first message stored at or after a time (epoch s)


@dataclass(frozen=True, slots=True)
class Start:
    """Where a subscription starts; build one with the class methods."""

    kind: StartKind = StartKind.DEFAULT
    offset: int = 0
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise InvalidArgument(f"start offset is {self.offset}; it must be >= 0")

    @classmethod
    def default(cls) -> Start:
        return cls()

    @classmethod
    def earliest(cls) -> Start:
        return cls(StartKind.EARLIEST)

    @classmethod
    def latest(cls) -> Start:
        return cls(StartKind.LATEST)

    @classmethod
    def at(cls, offset: int) -> Start:
        return cls(StartKind.OFFSET, offset=offset)

    @classmethod
    def since(cls, timestamp: float) -> Start:
        return cls(StartKind.TIMESTAMP, timestamp=timestamp)

    @classmethod
    def of(cls, value: Start | str | int | None) -> Start:
        """A start from what a caller may pass: a Start, ``"earliest"``,
        ``"latest"``, an offset, or None for the default."""
        if value is None:
            return cls()
        if isinstance(value, Start):
            return value
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InvalidArgument(
                f"start is {value!r}; it must be a Start, 'earliest', 'latest' or an offset"
            )
        if isinstance(value, int):
            return cls.at(value)
        return cls.parse(value)

    @classmethod
    def parse(cls, text: str) -> Start:
        """``earliest``, ``latest`` or an offset (the command line's ``--from``)."""
        word = text.strip().lower()
        if word in ("earliest", "latest"):
            return cls(StartKind(word))
        try:
            offset = int(word)
        except ValueError:
            raise InvalidArgument(
                f"start {text!r} is not earliest, latest or an offset (an integer >= 0)"
            ) from None
        return cls.at(offset)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish.

    ``lite_topics``: lite-topics under ``topic`` to store it in (one copy,
    one offset in each); empty for the parent topic's own queue.
    ``reply_to``: ``"topic/lite"`` where a reply should go (request-reply).
    """

    topic: str
    body: bytes = field(repr=False)
    lite_topics: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
    reply_to: str = ""

    def __post_init__(self) -> None:
        check_topic(self.topic)
        for i, lite in enumerate(self.lite_topics):
            check_lite(lite, where=f"lite_topics[{i}]")
        if self.reply_to:
            ref = QueueRef.parse(self.reply_to)
            if not ref.lite_topic:
                raise InvalidArgument(
                    f"reply_to {self.reply_to!r} must name a lite-topic as 'topic/lite'"
                )
        for key, value in self.properties.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidArgument(f"properties[{key!r}]: keys and values must be strings")

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What the server stored for one message.

    ``offsets`` follow ``lite_topics`` (one offset in the parent queue for a
    message without lite-topics). ``duplicate``: an earlier try stored it;
    its offsets are empty when the server no longer remembers them.
    """

    topic: str
    lite_topics: tuple[str, ...]
    offsets: tuple[int, ...]
    timestamp: float
    duplicate: bool
    sequence: int
    size: int

    @property
    def offset(self) -> int | None:
        """The first offset (the only one for a single lite-topic), None if unknown."""
        return self.offsets[0] if self.offsets else None


@dataclass(frozen=True, slots=True)
class Message:
    """A message received from a queue.

    ``attempt`` is 0 on a plain stream; in a consumer group it counts the
    deliveries (1 the first time). ``chunked``: the body was stored in
    pieces; a subscription hands it over whole, :meth:`Client.read` leaves
    ``body`` empty (fetch it with ``read_body``).
    """

    topic: str
    lite_topic: str
    offset: int
    body: bytes = field(repr=False)
    attempt: int = 0
    timestamp: float = 0.0
    properties: Mapping[str, str] = field(default_factory=dict)
    reply_to: str = ""
    size: int = 0
    chunked: bool = False
    lease_deadline: float | None = None

    @property
    def ref(self) -> QueueRef:
        return QueueRef(self.topic, self.lite_topic)

    @property
    def complete(self) -> bool:
        """Whether ``body`` holds the whole body."""
        return len(self.body) == self.size


@dataclass(frozen=True, slots=True)
class Notice:
    """A per-item failure the server reported on a subscription stream without
    ending it (a late ack, an extend of a lease that ran out)."""

    code: str  # the gRPC status name
    message: str
    ref: QueueRef | None


@dataclass(frozen=True, slots=True)
class ReadResult:
    messages: tuple[Message, ...]
    next_offset: int  # read on from here


@dataclass(frozen=True, slots=True)
class QueueInfo:
    topic: str
    lite_topic: str
    next_offset: int
    min_offset: int
    created: float
    last_active: float
    subscribers: int
    ttl_s: float | None  # None: never expires
    committed_offset: int | None  # the group's, when asked for one that has it


@dataclass(frozen=True, slots=True)
class ServerStatus:
    tenant: str
    version: str
    fsync: str
    max_message_bytes: int
    max_lite_topics_per_message: int
    max_read_messages: int
    max_attempts: int
    lite_topics: int
    max_tenant_lite_topics: int | None
    subscriptions: int
    max_subscriptions: int | None
