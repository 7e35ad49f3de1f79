"""The runtime's one I/O boundary: where requests, replies and restart points live.

:class:`RequestStore` is the protocol; :mod:`scheduler.runtime.broker_store`
is the real adapter (the broker, through the server's hub) and
:mod:`scheduler.runtime.memory_store` the in-memory one for unit tests. One
contract test suite runs against both.

Every method is a coroutine; a store raises only the runtime's own errors
(``ServingUnavailableError`` when it is closed or broken, ``TooMuchError`` for a limit,
``InvalidFieldError`` for a value the store refuses).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler.runtime.errors import ServingError
from scheduler.runtime.records import END, DoneRecord, ReplyMark, SubmitRecord, parse_reply
from scheduler.runtime.values import RequestView

__all__ = [
    "Appended",
    "DoneWrite",
    "FinishedWrite",
    "Recalled",
    "Replayed",
    "ReplyCollector",
    "ReplyScan",
    "ReplyWrite",
    "RequestStore",
    "StoredPayload",
    "Write",
]


@dataclass(frozen=True, slots=True)
class ReplyWrite:
    """One message for the reply lite-topic ``topic/lite`` of ``tenant``."""

    tenant: str
    topic: str
    lite: str
    properties: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class DoneWrite:
    record: DoneRecord


@dataclass(frozen=True, slots=True)
class FinishedWrite:
    """A finished request's final view, for the journal of :mod:`.finished`."""

    view: RequestView


Write = ReplyWrite | FinishedWrite | DoneWrite


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a submit record landed, and the reply lite-topic's end before it."""

    offset: int
    reply_from: int


@dataclass(frozen=True, slots=True)
class StoredPayload:
    """A payload read back: whole (``data``) when it is at most the inline limit,
    else as ``pieces`` (read from the store as they are consumed)."""

    size: int
    data: bytes | None
    pieces: AsyncIterator[bytes] | None


@dataclass(frozen=True, slots=True)
class ReplyScan:
    """One request's messages in its reply lite-topic, as stored.

    ``chunks`` are the chunk bodies in index order (0 .. n-1, contiguous);
    ``end`` is its end mark if one was stored; ``first_offset`` the offset
    of its first message (None: none stored).
    """

    chunks: tuple[bytes, ...]
    end: ReplyMark | None
    first_offset: int | None


class ReplyCollector:
    """Folds the messages of a reply lite-topic, fed in offset order, into one
    request's :class:`ReplyScan`. Both stores scan through it, so they agree on
    what a scan finds: other requests' messages are skipped, a repeated chunk
    keeps its first body, and the scan is over at the request's end mark."""

    __slots__ = ("_chunks", "_end", "_first", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._chunks: dict[int, bytes] = {}
        self._first: int | None = None
        self._end: ReplyMark | None = None

    def add(
        self, offset: int, properties: Mapping[str, str], body: bytes | Callable[[], bytes]
    ) -> bool:
        """Take the message at ``offset`` (a callable ``body`` is read only for a
        new chunk); True once the end mark is in: the scan can stop."""
        if self._end is not None:
            return True
        mark = parse_reply(properties)
        if mark is None or mark.request_id != self.request_id:
            return False
        if self._first is None:
            self._first = offset
        if mark.event == END:
            self._end = mark
            return True
        if mark.index not in self._chunks:
            self._chunks[mark.index] = body if isinstance(body, bytes) else body()
        return False

    def scan(self) -> ReplyScan:
        chunks = self._chunks
        ordered: list[bytes] = []
        while len(ordered) in chunks:  # contiguous from 0: the runtime never stores a gap
            ordered.append(chunks[len(ordered)])
        return ReplyScan(tuple(ordered), self._end, self._first)


@dataclass(frozen=True, slots=True)
class Replayed:
    """The records from the restart point on, in log order, and the queue's end."""

    records: tuple[tuple[int, SubmitRecord | DoneRecord], ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Recalled:
    """The finished requests' journal read back: the last views, oldest-finished
    first, and how many of its entries its last snapshot does not hold yet."""

    views: tuple[RequestView, ...]
    entries: int


class RequestStore(Protocol):
    async def boot(self, floor: int) -> int:
        """Record one more server start, durably; returns its number: above every
        earlier one still recorded, and at least ``floor`` (the runtime gives the
        wall-clock second, so numbers grow even if old records are gone)."""

    async def replay(self) -> Replayed:
        """Every record from the committed restart point to the end."""

    async def append_submit(
        self, record: SubmitRecord, payload: bytes | AsyncIterator[bytes]
    ) -> Appended:
        """Write an admitted request durably. ``record.reply_from`` is ignored: the
        store sets it to the reply lite-topic's end, read in the same step, and
        counts the reply lite-topic against the tenant's limit if it is new. A
        payload given as pieces is consumed as it is written (never held whole);
        an error raised by the pieces fails the append and stores nothing."""

    async def append_submits(
        self, items: Sequence[tuple[SubmitRecord, bytes]]
    ) -> list[Appended | ServingError]:
        """:meth:`append_submit` for many whole payloads in one durable write (one
        fsync for all). An item the store refuses (a tenant's limit) gets its
        error in its place; a failed write raises for all."""

    async def write(self, items: Sequence[Write]) -> list[int]:
        """Store ``items`` durably in one step, in order; returns each one's offset
        (in its reply lite-topic, in the requests queue for a done record, in the
        finished journal for a final view)."""

    async def read_payload(self, offset: int, inline_limit: int) -> StoredPayload:
        """The payload of the submit record at ``offset``."""

    async def scan_reply(
        self, tenant: str, topic: str, lite: str, from_offset: int, request_id: str
    ) -> ReplyScan:
        """``request_id``'s messages in ``tenant``'s ``topic/lite`` from ``from_offset`` on."""

    async def commit(self, offset: int) -> None:
        """Move the restart point: records below ``offset`` need no replay, and
        the store drops them (a payload there can no longer be read), so
        finished requests do not hold storage."""

    async def recall_finished(self, limit: int) -> Recalled:
        """The last ``limit`` final views the finished journal holds (see :mod:`.finished`)."""

    async def compact_finished(self, limit: int) -> int:
        """Fold the finished journal, up to its end now, into one durable snapshot
        of its last ``limit`` views and drop the records below that end, so the
        journal stops holding older log; returns how many views the snapshot holds."""
