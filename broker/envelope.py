"""What a broker record in the commit log carries: pure encode/decode.

The log frames and checksums payloads; this module defines the payloads.
A message record holds everything replay needs to rebuild the index without
the index: the names of the queues it was dispatched to with the offsets it
got there, its timestamp, properties, and either the body or references to
the chunk records that hold it. Big-endian::

    message  kind=1 u8 | flags u8 | timestamp f64 | queues u16
             | (name_len u16 | name | offset u64) * queues
             | props u16 | (key_len u16 | key | value_len u32 | value) * props
             | body                                       (flags & CHUNKED == 0)
             | size u64 | chunks u32 | chunk position u64 * chunks   (CHUNKED)
    chunk    kind=2 u8 | bytes of the body
    trim     kind=3 u8 | name_len u16 | name | below u64   (broker/trimming.py)

Chunk records come before the message record that lists them, so a message
is visible only once all of its body is in the log. A trim record comes
after every message it trims; replay drops that queue's offsets below it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from broker.errors import InvalidArgument

__all__ = [
    "CHUNK",
    "EMPTY_PROPERTIES",
    "MAX_PROPERTIES",
    "MAX_PROPERTIES_BYTES",
    "MAX_PROPERTY_KEY_BYTES",
    "MAX_PROPERTY_VALUE_BYTES",
    "MESSAGE",
    "NO_PROPERTIES",
    "SINGLE_HEAD_FORMAT",
    "Delivered",
    "MessageRecord",
    "chunk_payload",
    "decode_delivery",
    "decode_message",
    "delivery_in",
    "encode_chunked",
    "encode_inline",
    "encode_properties",
    "encode_run",
    "encode_single",
    "kind_of",
    "single_head",
]

MESSAGE = 1
CHUNK = 2
_CHUNKED = 0x01

MAX_PROPERTIES = 128
MAX_PROPERTY_KEY_BYTES = 256
MAX_PROPERTY_VALUE_BYTES = 65536
MAX_PROPERTIES_BYTES = 1024 * 1024
NO_PROPERTIES = b"\x00\x00"

_HEAD = struct.Struct(">BBdH")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_CHUNK_HEAD = struct.Struct(">QI")
_CHUNK_TAG = bytes([CHUNK])
# The head of a one-queue record and its name length: kind, flags, timestamp,
# queues (1), name_len; the name, its offset (u64) and the properties follow.
SINGLE_HEAD_FORMAT = ">BBdHH"
_SINGLE = struct.Struct(SINGLE_HEAD_FORMAT)
_NONE: Mapping[str, str] = MappingProxyType({})
EMPTY_PROPERTIES = _NONE  # the one shared mapping a message without properties gets


def kind_of(payload: bytes) -> int:
    return payload[0] if payload else 0


def encode_properties(properties: Mapping[str, str]) -> bytes:
    """Validated, encoded properties (``key_len | key | value_len | value``)."""
    if not properties:
        return NO_PROPERTIES
    if len(properties) > MAX_PROPERTIES:
        raise InvalidArgument(
            f"properties holds {len(properties)} entries; at most {MAX_PROPERTIES} are allowed"
        )
    parts = [_H.pack(len(properties))]
    for key, value in properties.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgument(f"property {key!r}: keys and values must be strings")
        raw_key = key.encode()
        raw_value = value.encode()
        if not 0 < len(raw_key) <= MAX_PROPERTY_KEY_BYTES:
            raise InvalidArgument(
                f"property key {key!r} must be 1 to {MAX_PROPERTY_KEY_BYTES} bytes of UTF-8"
            )
        if len(raw_value) > MAX_PROPERTY_VALUE_BYTES:
            raise InvalidArgument(
                f"property {key!r} value is {len(raw_value)} bytes; "
                f"at most {MAX_PROPERTY_VALUE_BYTES} are allowed"
            )
        parts += (_H.pack(len(raw_key)), raw_key, _I.pack(len(raw_value)), raw_value)
    encoded = b"".join(parts)
    if len(encoded) > MAX_PROPERTIES_BYTES:
        raise InvalidArgument(
            f"properties take {len(encoded)} bytes encoded; at most {MAX_PROPERTIES_BYTES} "
            "are allowed"
        )
    return encoded


def _queues(queues: Sequence[tuple[bytes, int]]) -> list[bytes]:
    parts: list[bytes] = []
    for name, offset in queues:
        parts += (_H.pack(len(name)), name, _Q.pack(offset))
    return parts


def single_head(timestamp: float) -> bytes:
    """The first bytes of every inline, one-queue record stamped ``timestamp``.

    A batch shares one timestamp, so the fast path packs this once per batch
    and hands it to :func:`encode_single`.
    """
    return _HEAD.pack(MESSAGE, 0, timestamp, 1)


def encode_single(head: bytes, name: bytes, offset: int, properties: bytes, body: bytes) -> bytes:
    """``encode_inline(timestamp, [(name, offset)], properties, body)``, given its head."""
    return b"".join((head, _H.pack(len(name)), name, _Q.pack(offset), properties, body))


def encode_run(
    head: bytes, name: bytes, first: int, properties: bytes, bodies: Sequence[bytes]
) -> list[bytes]:
    """``encode_single`` of each body, at offsets ``first``, ``first + 1``, ... of ``name``."""
    prefix = head + _H.pack(len(name)) + name
    pack = _Q.pack
    join = b"".join
    return [join((prefix, pack(first + i), properties, body)) for i, body in enumerate(bodies)]


def encode_inline(
    timestamp: float, queues: Sequence[tuple[bytes, int]], properties: bytes, body: bytes
) -> bytes:
    """A message record whose body follows inline."""
    return b"".join(
        (_HEAD.pack(MESSAGE, 0, timestamp, len(queues)), *_queues(queues), properties, body)
    )


def encode_chunked(
    timestamp: float,
    queues: Sequence[tuple[bytes, int]],
    properties: bytes,
    size: int,
    chunks: Sequence[int],
) -> bytes:
    """A message record whose body lives in the chunk records at ``chunks``."""
    return b"".join(
        (
            _HEAD.pack(MESSAGE, _CHUNKED, timestamp, len(queues)),
            *_queues(queues),
            properties,
            _CHUNK_HEAD.pack(size, len(chunks)),
            struct.pack(f">{len(chunks)}Q", *chunks),
        )
    )


def chunk_payload(data: bytes | memoryview) -> bytes:
    """A chunk record's payload."""
    return _CHUNK_TAG + data


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A decoded message record. ``body`` is empty when ``chunks`` is not."""

    timestamp: float
    queues: tuple[tuple[bytes, int], ...]
    properties: Mapping[str, str]
    size: int
    body: bytes
    chunks: tuple[int, ...]

    @property
    def chunked(self) -> bool:
        return bool(self.chunks)

    @property
    def low(self) -> int | None:
        """Position of the first chunk record, if any."""
        return min(self.chunks) if self.chunks else None


def decode_message(payload: bytes, *, with_body: bool = True) -> MessageRecord:
    """Decode a message record (ValueError if it is not one, or is malformed)."""
    if kind_of(payload) != MESSAGE:
        raise ValueError(f"record kind {kind_of(payload)} is not a message record")
    try:
        _, flags, timestamp, count = _HEAD.unpack_from(payload, 0)
        at = _HEAD.size
        queues: list[tuple[bytes, int]] = []
        for _ in range(count):
            (length,) = _H.unpack_from(payload, at)
            at += 2
            name = payload[at : at + length]
            at += length
            queues.append((name, _Q.unpack_from(payload, at)[0]))
            at += 8
        properties, at = _read_properties(payload, at)
        if flags & _CHUNKED:
            size, n = _CHUNK_HEAD.unpack_from(payload, at)
            at += _CHUNK_HEAD.size
            chunks = struct.unpack_from(f">{n}Q", payload, at)
            if at + 8 * n != len(payload):
                raise ValueError("chunk list does not end the record")
            return MessageRecord(timestamp, tuple(queues), properties, size, b"", chunks)
        body = payload[at:] if with_body else b""
        return MessageRecord(timestamp, tuple(queues), properties, len(payload) - at, body, ())
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed message record: {exc}") from exc


def decode_properties(encoded: bytes) -> Mapping[str, str]:
    """What :func:`encode_properties` encoded, read-only (ValueError if malformed)."""
    if encoded == NO_PROPERTIES:
        return _NONE
    try:
        properties, _ = _read_properties(encoded, 0)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed properties: {exc}") from exc
    return MappingProxyType(properties)


def _read_properties(data: bytes, at: int) -> tuple[dict[str, str], int]:
    """The encoded properties at ``data[at:]`` and where they end (struct.error
    or UnicodeDecodeError when malformed)."""
    (count,) = _H.unpack_from(data, at)
    at += 2
    properties: dict[str, str] = {}
    for _ in range(count):
        (length,) = _H.unpack_from(data, at)
        at += 2
        key = data[at : at + length].decode()
        at += length
        (length,) = _I.unpack_from(data, at)
        at += 4
        properties[key] = data[at : at + length].decode()
        at += length
    return properties, at


Delivered = tuple[float, Mapping[str, str], int, bytes, bool]


def decode_delivery(payload: bytes) -> Delivered:
    """(timestamp, properties, size, body, chunked) of a message record, for delivery."""
    return delivery_in(payload, 0, len(payload))


def delivery_in(buf: bytes, start: int, end: int) -> Delivered:
    """:func:`decode_delivery` of the record payload ``buf[start:end]``, read in place.

    The read path decodes every delivered message, and most are one queue,
    no properties, an inline body: those take a short branch that builds
    nothing but the body, the one copy made (properties come back as one
    shared empty mapping). The rest, and anything malformed, go through
    :func:`decode_message`.
    """
    if end - start >= _SINGLE.size:
        kind, flags, timestamp, count, length = _SINGLE.unpack_from(buf, start)
        at = start + _SINGLE.size + length + 8  # past the name and the offset
        if (
            kind == MESSAGE
            and flags == 0
            and count == 1
            and at + 2 <= end
            and buf[at : at + 2] == NO_PROPERTIES
        ):
            body = buf[at + 2 : end]
            return timestamp, _NONE, len(body), body, False
    rec = decode_message(buf[start:end])
    return rec.timestamp, rec.properties, rec.size, rec.body, rec.chunked
