"""Record framing for the commit log: pure functions, no I/O.

A frame on disk is, big-endian::

    +----------------+-----------+----------------+-------------------+
    | length  u32    | version u8| crc32c  u32    | payload (length)  |
    +----------------+-----------+----------------+-------------------+

``length`` counts the payload only. The CRC32C covers the version byte and the
payload, so a flipped version byte or payload byte is caught; a flipped length
moves the payload window and is caught by the CRC too (or by the length
bound). The CRC field sits between version and payload, which is why the CRC
is computed as ``crc32c(payload, crc32c(version byte))``: the checksum package
continues a CRC from a previous value, so nothing is concatenated.

Decoding tells three outcomes apart, because recovery treats them differently:

- :class:`Frame`: a complete, valid record;
- :class:`Incomplete`: the buffer ends before the record does (a torn tail when
  it is the end of the last segment);
- :class:`Corrupt`: the bytes can never be a valid record (unknown version,
  length above the bound, CRC mismatch).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate

import crc32c

from broker.errors import InvalidArgument

__all__ = [
    "CRC_SEED",
    "HEADER_FORMAT",
    "HEADER_SIZE",
    "MAX_PAYLOAD_BYTES",
    "VERSION",
    "Corrupt",
    "Decoded",
    "Frame",
    "Incomplete",
    "Walk",
    "decode",
    "encode",
    "encode_many",
    "frame_offsets",
    "payload_at",
    "payload_end",
    "resync",
    "walk",
]

HEADER_FORMAT = ">IBI"  # length, version, crc32c
_HEADER = struct.Struct(HEADER_FORMAT)
HEADER_SIZE = _HEADER.size  # 9
VERSION = 1
MAX_PAYLOAD_BYTES = 0xFFFF_FFFF  # what the u32 length field can say

# CRC of the version byte alone; every record's CRC continues from it.
_VERSION_CRC: int = crc32c.crc32c(bytes([VERSION]))
# What a frame's stored CRC is: crc32c(payload, CRC_SEED) (see the module doc).
CRC_SEED = _VERSION_CRC
_VERSION_BYTE = bytes([VERSION])

Buffer = bytes | bytearray | memoryview | mmap.mmap


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete, valid record starting at ``offset`` and ending before ``end``."""

    offset: int
    end: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Incomplete:
    """The buffer ends before the record starting at ``offset`` does.

    ``missing`` is how many more bytes are needed to learn more: the rest of
    the record when the header is complete, else the rest of the header.
    """

    offset: int
    missing: int


@dataclass(frozen=True, slots=True)
class Corrupt:
    """The bytes at ``offset`` can never be a valid record; ``reason`` says which check failed."""

    offset: int
    reason: str


Decoded = Frame | Incomplete | Corrupt


@dataclass(frozen=True, slots=True)
class Walk:
    """Result of :func:`walk`: valid frames fill ``[start, end)``; ``stop`` says why it ended.

    ``stop`` is None when the frames end exactly at the walk's limit.
    """

    end: int
    count: int
    stop: Incomplete | Corrupt | None


def _checksum(payload: Buffer) -> int:
    return int(crc32c.crc32c(payload, _VERSION_CRC))


def encode(payload: bytes) -> bytes:
    """Frame one payload."""
    size = len(payload)
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidArgument(
            f"payload is {size} bytes; a record holds at most {MAX_PAYLOAD_BYTES} bytes"
        )
    return _HEADER.pack(size, VERSION, _checksum(payload)) + payload


def encode_many(payloads: Iterable[bytes]) -> bytes:
    """Frame a batch into one buffer, ready for a single write()."""
    pack = _HEADER.pack
    checksum = crc32c.crc32c
    seed = _VERSION_CRC
    parts: list[bytes] = []
    append = parts.append
    for payload in payloads:
        size = len(payload)
        if size > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(
                f"payload is {size} bytes; a record holds at most {MAX_PAYLOAD_BYTES} bytes"
            )
        append(pack(size, VERSION, checksum(payload, seed)))
        append(payload)
    return b"".join(parts)


def frame_offsets(payloads: Iterable[bytes]) -> list[int]:
    """Offset of each frame inside ``encode_many(payloads)``."""
    sizes = [HEADER_SIZE + len(p) for p in payloads]
    if not sizes:
        return []
    return [0, *accumulate(sizes[:-1])]


def _check_header(length: int, version: int, max_record_bytes: int) -> str | None:
    if version != VERSION:
        return f"unknown format version {version} (this build reads version {VERSION})"
    if length > max_record_bytes:
        return f"length {length} is above the record limit of {max_record_bytes} bytes"
    return None


def decode(buf: Buffer, offset: int = 0, *, max_record_bytes: int = MAX_PAYLOAD_BYTES) -> Decoded:
    """Decode the frame that starts at ``offset`` in ``buf``."""
    available = len(buf) - offset
    if available < HEADER_SIZE:
        return Incomplete(offset, HEADER_SIZE - available)
    length, version, stored = _HEADER.unpack_from(buf, offset)
    reason = _check_header(length, version, max_record_bytes)
    if reason is not None:
        return Corrupt(offset, reason)
    end = offset + HEADER_SIZE + length
    if end > len(buf):
        return Incomplete(offset, end - len(buf))
    payload = bytes(buf[offset + HEADER_SIZE : end])
    computed = _checksum(payload)
    if computed != stored:
        return Corrupt(offset, f"CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")
    return Frame(offset, end, payload)


def payload_at(buf: bytes, offset: int, max_record_bytes: int) -> bytes | None:
    """The payload of the valid frame at ``offset`` in ``buf``, or None.

    The lean twin of :func:`decode` for batch reads: no objects besides the
    payload. None means "not a complete, valid frame here" (cut off by the
    buffer's end, or corrupt); the caller falls back to :func:`decode` for
    the details.
    """
    end = payload_end(buf, memoryview(buf), offset, max_record_bytes)
    return None if end < 0 else buf[offset + HEADER_SIZE : end]


def payload_end(buf: bytes, view: memoryview, offset: int, max_record_bytes: int) -> int:
    """Where the payload of the valid frame at ``offset`` in ``buf`` ends (it
    starts at ``offset + HEADER_SIZE``), or -1 as :func:`payload_at` says None.

    ``view`` is ``memoryview(buf)``, made once per buffer: the checksum reads
    the payload in place, so a reader that decodes the payload from ``buf``
    copies nothing on the way.
    """
    if offset + HEADER_SIZE > len(buf):
        return -1
    length, version, stored = _HEADER.unpack_from(buf, offset)
    start = offset + HEADER_SIZE
    end: int = start + length
    if version != VERSION or length > max_record_bytes or end > len(buf):
        return -1
    if crc32c.crc32c(view[start:end], _VERSION_CRC) != stored:
        return -1
    return end


def walk(buf: memoryview, start: int, stop: int, max_record_bytes: int) -> Walk:
    """Check consecutive frames in ``buf[start:stop]`` without copying payloads.

    This is the hot loop of recovery (a 1 GiB log is a million 1 KiB records),
    so it stays flat: one ``unpack_from`` and one CRC per record, slices of a
    memoryview (no copies), no objects per record.
    """
    unpack = _HEADER.unpack_from
    checksum = crc32c.crc32c
    seed = _VERSION_CRC
    pos = start
    count = 0
    last_header = stop - HEADER_SIZE
    while pos <= last_header:
        length, version, stored = unpack(buf, pos)
        if version != VERSION or length > max_record_bytes:
            reason = _check_header(length, version, max_record_bytes)
            assert reason is not None
            return Walk(pos, count, Corrupt(pos, reason))
        end = pos + HEADER_SIZE + length
        if end > stop:
            return Walk(pos, count, Incomplete(pos, end - stop))
        computed = checksum(buf[pos + HEADER_SIZE : end], seed)
        if computed != stored:
            return Walk(
                pos,
                count,
                Corrupt(pos, f"CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}"),
            )
        pos = end
        count += 1
    if pos == stop:
        return Walk(pos, count, None)
    return Walk(pos, count, Incomplete(pos, HEADER_SIZE - (stop - pos)))


def resync(buf: bytes | bytearray | mmap.mmap, start: int, max_record_bytes: int) -> int | None:
    """Offset of the first complete, valid frame at or after ``start``, or None.

    Used after a corrupt record to find where good data resumes. Only offsets
    whose version byte is right can start a frame, so ``find`` (C speed) jumps
    between candidates; zero-filled or text regions cost next to nothing.
    """
    size = len(buf)
    probe = start + 4  # where a candidate's version byte sits
    while True:
        probe = buf.find(_VERSION_BYTE, probe)
        if probe < 0:
            return None
        candidate = probe - 4
        if candidate + HEADER_SIZE > size:
            return None
        length, _version, stored = _HEADER.unpack_from(buf, candidate)
        end = candidate + HEADER_SIZE + length
        if (
            length <= max_record_bytes
            and end <= size
            and _checksum(buf[candidate + HEADER_SIZE : end]) == stored
        ):
            return candidate
        probe += 1
