"""Checking a publish request before anything is written.

Pure: turns a :class:`PublishRequest` into the queue keys it dispatches to,
its encoded properties and its body, or raises InvalidArgument /
MessageTooLarge naming the bad value and the rule. Runs once per message on
the fast path, so the common shapes (one lite-topic or none, no properties,
a bytes body) take the short branches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

from broker import envelope
from broker.errors import InvalidArgument, MessageTooLarge
from broker.types import LITE_PATTERN, Body, PublishRequest, check_lite, parent_prefix

__all__ = ["Prepared", "Preparer"]

# (queue keys, encoded properties, body)
Prepared = tuple[tuple[bytes, ...], bytes, Body]

_BYTES = (bytes, bytearray, memoryview)
_KNOWN_MAX = 4096


class Preparer:
    """Validates requests against one store's limits."""

    def __init__(self, *, max_lite_topics: int, max_message_bytes: int) -> None:
        self._max_lites = max_lite_topics
        self._max_bytes = max_message_bytes
        # Keys of recently validated (parent, lite) pairs: a stream of chunks
        # into one session's lite-topic validates its name once, not per chunk.
        self._known: dict[tuple[bytes, str], bytes] = {}

    def __call__(self, request: PublishRequest) -> Prepared:
        topic, body, lites, properties, namespace = request
        prefix = parent_prefix(namespace, topic)
        if not lites:
            keys: tuple[bytes, ...] = (prefix,)
        elif type(lites) is tuple and len(lites) == 1:
            lite = lites[0]
            key = self._known.get((prefix, lite)) if type(lite) is str else None
            if key is None:
                if type(lite) is not str or LITE_PATTERN.fullmatch(lite) is None:
                    check_lite(lite)
                key = prefix + b"/" + lite.encode()
                if len(self._known) >= _KNOWN_MAX:
                    self._known.clear()  # crude but bounded; refills with what is hot
                self._known[prefix, lite] = key
            keys = (key,)
        else:
            keys = self._many(prefix, lites)
        if type(body) is bytes:
            if len(body) > self._max_bytes:
                raise MessageTooLarge(len(body), self._max_bytes)
        elif isinstance(body, _BYTES):
            size = body.nbytes if isinstance(body, memoryview) else len(body)
            if size > self._max_bytes:
                raise MessageTooLarge(size, self._max_bytes)
        elif isinstance(cast(object, body), str) or not isinstance(body, Iterable):
            raise InvalidArgument(
                f"body is {type(body).__name__}; it must be bytes or an iterable of bytes"
            )
        encoded = envelope.encode_properties(properties) if properties else envelope.NO_PROPERTIES
        return keys, encoded, body

    def all(self, requests: Sequence[PublishRequest]) -> list[Prepared]:
        """``[self(r) for r in requests]``, checking a destination once per run.

        A batch mostly sends message after message to one destination: a
        request with the same topic, namespace, lite-topic tuple (the same
        object) and no or the same properties as the one before reuses its
        keys and encoded properties, and only its body is checked.
        """
        out: list[Prepared] = []
        append = out.append
        last: PublishRequest | None = None
        keys: tuple[bytes, ...] = ()
        encoded = envelope.NO_PROPERTIES
        limit = self._max_bytes
        for request in requests:
            topic, body, lites, properties, namespace = request
            if (
                last is not None
                and lites is last[2]
                and topic == last[0]
                and namespace == last[4]
                and (properties is last[3] or not (properties or last[3]))
                and type(body) is bytes
                and len(body) <= limit
            ):
                append((keys, encoded, body))
                continue
            prepared = self(request)
            keys, encoded = prepared[0], prepared[1]
            last = request
            append(prepared)
        return out

    def _many(self, prefix: bytes, lites: Iterable[str]) -> tuple[bytes, ...]:
        if isinstance(cast(object, lites), str):
            raise InvalidArgument(
                f"lite_topics is the string {lites!r}; give a sequence of lite-topic names"
            )
        names = list(lites)
        if len(names) > self._max_lites:
            raise InvalidArgument(
                f"lite_topics lists {len(names)} names; at most {self._max_lites} "
                "are allowed per message"
            )
        keys = tuple(prefix + b"/" + check_lite(lite).encode() for lite in names)
        if len(set(keys)) != len(keys):
            twice = next(lite for i, lite in enumerate(names) if lite in names[:i])
            raise InvalidArgument(f"lite_topics lists {twice!r} more than once")
        return keys
