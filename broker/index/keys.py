"""Key and value layouts of the index, one column family at a time.

Pure codecs, big-endian throughout so byte order is numeric order and one
queue's keys are contiguous. ``qid`` is a queue id (u64, allocated from the
meta counter, never reused); ``name`` is :attr:`broker.types.QueueName.key`.

index      qid u64 | offset u64                 -> position u64 | size u32 | flags u8
                                                   [| low u64 when FLAG_CHUNKED]
           ``low`` is the position of the message's first chunk record: the
           lowest log byte the message needs, which segment reclamation must keep.
registry   name                                  -> qid u64 | next u64 | min u64 |
                                                   first u64 | created f64 | active f64
           ``next``: offset the next message gets; ``min``: first offset still
           indexed; ``first``: lowest log position a live message of the queue
           needs (NO_POSITION when it has none); ``created`` / ``active``: clock
           seconds of creation and of the last publish or unsubscribe.
expiry     deadline_ms u64 | seq u64             -> (name_len u16 | name) * n
           the named lite-topics may expire at ``deadline_ms`` (rounded up to
           the expiry granularity). One key per (batch, deadline): a batch that
           creates a thousand topics writes one key, not a thousand. ``seq``
           (from META_EXPIRY_SEQ) keeps keys unique. Names go stale when a
           topic is used again; expire() checks the registry before it removes
           anything.
refs       bucket u64                            -> count u64
           how many live queues have ``first`` in [bucket * width, ...): the
           lowest bucket bounds which log segments may be reclaimed. ``width``
           (META_REF_BUCKET) is fixed when the store is created, from its
           segment size: coarse enough that this column stays small, fine
           enough that reclamation lags by a fraction of a segment.
offsets    qid u64 | group                       -> committed offset u64
leases     qid u64 | group                       -> broker.delivery encoding
meta       b"covered"                            -> u64: the log is indexed up to here
           b"next_qid"                           -> u64: next queue id to allocate
           b"expiry_seq"                         -> u64: next expiry key sequence
           b"ref_bucket"                         -> u64: refs bucket width, log bytes
           b"ttl_settings"                       -> the TTL settings the expiry keys
                                                    were computed with (JSON)
           b"queues"                             -> u64: live queues
           b"version"                            -> u64: layout version
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "FLAG_CHUNKED",
    "INDEX_VALUE",
    "LAYOUT_VERSION",
    "META_COVERED",
    "META_EXPIRY_SEQ",
    "META_NEXT_QID",
    "META_QUEUES",
    "META_REF_BUCKET",
    "META_TTL_SETTINGS",
    "META_VERSION",
    "NO_POSITION",
    "OFFSET_KEY",
    "REGISTRY_VALUE",
    "IndexValue",
    "Registration",
    "deadline_ms",
    "decode_index",
    "decode_names",
    "decode_registry",
    "decode_u64",
    "encode_index",
    "encode_names",
    "encode_registry",
    "encode_u64",
    "expiry_deadline",
    "expiry_key",
    "group_key",
    "group_of",
    "locate",
    "offset_key",
    "offset_of",
    "queue_range",
    "ref_bucket_width",
]

LAYOUT_VERSION = 1
NO_POSITION = 0xFFFF_FFFF_FFFF_FFFF
FLAG_CHUNKED = 0x01

META_COVERED = b"covered"
META_NEXT_QID = b"next_qid"
META_EXPIRY_SEQ = b"expiry_seq"
META_TTL_SETTINGS = b"ttl_settings"
META_REF_BUCKET = b"ref_bucket"
META_QUEUES = b"queues"
META_VERSION = b"version"

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_QQ = struct.Struct(">QQ")
OFFSET_KEY = _QQ  # offset_key() is OFFSET_KEY.pack; hot loops bind the method

_INDEX = struct.Struct(">QIB")
INDEX_VALUE = _INDEX  # encode_index(p, size) is INDEX_VALUE.pack(p, size, 0); hot loops bind it
_INDEX_CHUNKED = struct.Struct(">QIBQ")
_REGISTRY = struct.Struct(">QQQQdd")
REGISTRY_VALUE = _REGISTRY

encode_u64 = _U64.pack


def decode_u64(data: bytes) -> int:
    value: int = _U64.unpack(data)[0]
    return value


# ------------------------------------------------------------------- index


def offset_key(qid: int, offset: int) -> bytes:
    """Index key of ``offset`` in queue ``qid``."""
    return _QQ.pack(qid, offset)


def offset_of(key: bytes) -> tuple[int, int]:
    """(qid, offset) of an index key."""
    qid, offset = _QQ.unpack(key)
    return qid, offset


def queue_range(qid: int) -> tuple[bytes, bytes]:
    """[start, end) covering every key of queue ``qid`` in a qid-prefixed column."""
    return _U64.pack(qid), _U64.pack(qid + 1)


@dataclass(frozen=True, slots=True)
class IndexValue:
    """Where one queue entry's message lives in the log."""

    position: int
    size: int
    flags: int = 0
    low: int | None = None  # first chunk position, for chunked messages

    @property
    def chunked(self) -> bool:
        return bool(self.flags & FLAG_CHUNKED)

    @property
    def lowest(self) -> int:
        """The lowest log position the message needs."""
        return self.position if self.low is None else min(self.low, self.position)


def encode_index(position: int, size: int, low: int | None = None) -> bytes:
    if low is None:
        return _INDEX.pack(position, size, 0)
    return _INDEX_CHUNKED.pack(position, size, FLAG_CHUNKED, low)


def decode_index(data: bytes) -> IndexValue:
    if len(data) == _INDEX_CHUNKED.size:
        position, size, flags, low = _INDEX_CHUNKED.unpack(data)
        return IndexValue(position, size, flags, low)
    position, size, flags = _INDEX.unpack(data)
    return IndexValue(position, size, flags)


def positions_of(raws: list[bytes]) -> list[int] | None:
    """The record positions of index values that are all plain (no chunked body,
    whose lowest position is its own); None if any is not, or is missing.

    The read path's run of a queue's entries in one pass of C-level calls:
    one check of the lengths and one unpack per entry, no tuple per entry.
    """
    if None in raws or sum(map(len, raws)) != _INDEX.size * len(raws):
        return None
    first = _U64.unpack_from
    return [first(raw)[0] for raw in raws]


def locate(data: bytes) -> tuple[int, int]:
    """(position, lowest position needed) of an index value: :func:`decode_index`
    without the object, for the read path's loop over every message."""
    if len(data) == _INDEX.size:
        position: int = _U64.unpack_from(data)[0]
        return position, position
    value = decode_index(data)
    return value.position, value.lowest


# ---------------------------------------------------------------- registry


@dataclass(frozen=True, slots=True)
class Registration:
    """A registry value, decoded."""

    qid: int
    next_offset: int
    min_offset: int
    first_position: int
    created: float
    last_active: float


def encode_registry(  # noqa: PLR0917 - mirrors the packed layout field by field
    qid: int, next_offset: int, min_offset: int, first: int, created: float, active: float
) -> bytes:
    return _REGISTRY.pack(qid, next_offset, min_offset, first, created, active)


def decode_registry(data: bytes) -> Registration:
    return Registration(*_REGISTRY.unpack(data))


# ------------------------------------------------------------------ expiry


def deadline_ms(deadline_s: float, granularity_s: float) -> int:
    """Deadline in milliseconds, rounded *up* to the granularity (never early)."""
    step = max(1, round(granularity_s * 1000))
    return math.ceil(deadline_s * 1000 / step) * step


def expiry_key(deadline: int, seq: int) -> bytes:
    return _QQ.pack(deadline, seq)


def expiry_deadline(key: bytes) -> int:
    return decode_u64(key[:8])


def encode_names(names: Iterable[bytes]) -> bytes:
    """Length-prefixed names (the expiry value)."""
    pack = _U16.pack
    return b"".join([pack(len(name)) + name for name in names])


def decode_names(data: bytes) -> list[bytes]:
    names: list[bytes] = []
    at = 0
    while at < len(data):
        (length,) = _U16.unpack_from(data, at)
        at += 2
        names.append(data[at : at + length])
        at += length
    if at != len(data):
        raise ValueError("expiry value ends inside a name")
    return names


# -------------------------------------------------------------------- refs


def ref_bucket_width(segment_bytes: int) -> int:
    """Bucket width for a new store: an eighth of a segment, within [4 KiB, 1 MiB]."""
    return max(4096, min(1 << 20, segment_bytes // 8))


# ------------------------------------------------------- offsets and leases


def group_key(qid: int, group: str) -> bytes:
    """Key of consumer group ``group`` on queue ``qid`` (offsets and leases)."""
    return _U64.pack(qid) + group.encode()


def group_of(key: bytes) -> tuple[int, str]:
    return decode_u64(key[:8]), key[8:].decode()
