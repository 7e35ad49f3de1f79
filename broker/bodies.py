"""Large bodies: written as chunk records, read back as a stream.

A body above ``chunk_bytes`` never sits in memory whole more than once (the
caller's copy, if the caller has one): it goes to the log a few chunks at a
time and comes back one chunk at a time. Chunk records are not indexed; the
message record that follows them lists their positions. A crash part way
leaves orphan chunks that nothing lists; they go with their segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

from broker import envelope
from broker.errors import CorruptLog, InvalidArgument, MessageTooLarge, NotFound
from broker.log.commitlog import CommitLog
from broker.types import Body, Chunk

__all__ = ["ChunkedBody", "body_size", "read_chunks", "write_body"]

# Chunks per log append: bounds memory (this many chunks, framed once more by
# the log) while keeping fsyncs under `always` to one per group.
_CHUNKS_PER_APPEND = 4

_BYTES = (bytes, bytearray, memoryview)


@dataclass(frozen=True, slots=True)
class ChunkedBody:
    """A body stored as chunk records at ``chunks`` (in order), ``size`` bytes in all."""

    size: int
    chunks: tuple[int, ...]


class _ChunkSink:
    def __init__(self, log: CommitLog) -> None:
        self._log = log
        self._pending: list[bytes] = []
        self.positions: list[int] = []

    def add(self, data: bytes | memoryview) -> None:
        self._pending.append(envelope.chunk_payload(data))
        if len(self._pending) >= _CHUNKS_PER_APPEND:
            self.flush()

    @property
    def empty(self) -> bool:
        return not self.positions and not self._pending

    def flush(self) -> None:
        if self._pending:
            self.positions += self._log.append(self._pending)
            self._pending = []


def body_size(body: bytes | bytearray | memoryview) -> int:
    return body.nbytes if isinstance(body, memoryview) else len(body)


def write_body(log: CommitLog, body: Body, *, chunk_bytes: int, limit: int) -> bytes | ChunkedBody:
    """Store ``body``: small bodies come back as bytes to go inline, large ones as chunks."""
    if isinstance(body, _BYTES):
        size = body_size(body)
        if size > limit:
            raise MessageTooLarge(size, limit)
        if size <= chunk_bytes:
            return bytes(body)
        view = memoryview(body).cast("B")
        sink = _ChunkSink(log)
        for at in range(0, size, chunk_bytes):
            sink.add(view[at : at + chunk_bytes])
        sink.flush()
        return ChunkedBody(size, tuple(sink.positions))
    if isinstance(cast(object, body), str):
        raise InvalidArgument("body is a str; it must be bytes or an iterable of bytes")
    return _write_stream(log, body, chunk_bytes=chunk_bytes, limit=limit)


def _write_stream(
    log: CommitLog, pieces: Iterable[Chunk], *, chunk_bytes: int, limit: int
) -> bytes | ChunkedBody:
    """Re-cut an iterable of pieces into chunks of exactly ``chunk_bytes``.

    A full buffer is written only when more data arrives, so a body of at
    most ``chunk_bytes`` in all stays inline, as it would given as bytes.
    """
    sink = _ChunkSink(log)
    buf = bytearray()
    total = 0
    for piece in pieces:
        if not isinstance(piece, _BYTES):
            raise InvalidArgument(
                f"body chunk is {type(piece).__name__}; body chunks must be bytes-like"
            )
        view = memoryview(piece).cast("B")
        total += view.nbytes
        if total > limit:
            raise MessageTooLarge(total, limit)
        at = 0
        while at < view.nbytes:
            if len(buf) == chunk_bytes:
                sink.add(bytes(buf))
                buf.clear()
            take = view[at : at + chunk_bytes - len(buf)]
            buf += take
            at += take.nbytes
    if sink.empty:
        return bytes(buf)
    if buf:
        sink.add(bytes(buf))
    sink.flush()
    return ChunkedBody(total, tuple(sink.positions))


def read_chunks(log: CommitLog, chunks: Iterable[int], what: str) -> Iterator[bytes]:
    """Stream the chunk records at ``chunks``; ``what`` names the message in errors."""
    for position in chunks:
        try:
            payload = log.read(position)
        except NotFound as exc:
            raise NotFound(
                f"{what}: body chunk at log position {position} is gone ({exc})"
            ) from exc
        if envelope.kind_of(payload) != envelope.CHUNK:
            raise CorruptLog(log.directory, position, f"{what}: expected a body chunk record")
        yield payload[1:]
