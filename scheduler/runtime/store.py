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

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler.runtime.errors import ServingError
from scheduler.runtime.records import DoneRecord, ReplyMark, SubmitRecord

__all__ = [
    "Appended",
    "DoneWrite",
    "Replayed",
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


Write = ReplyWrite | DoneWrite


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


@dataclass(frozen=True, slots=True)
class Replayed:
    """The records from the restart point on, in log order, and the queue's end."""

    records: tuple[tuple[int, SubmitRecord | DoneRecord], ...]
    start: int
    end: int


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
        (in its reply lite-topic, or in the requests queue for a done record)."""

    async def read_payload(self, offset: int, inline_limit: int) -> StoredPayload:
        """The payload of the submit record at ``offset``."""

    async def scan_reply(
        self, tenant: str, topic: str, lite: str, from_offset: int, request_id: str
    ) -> ReplyScan:
        """``request_id``'s messages in ``tenant``'s ``topic/lite`` from ``from_offset`` on."""

    async def commit(self, offset: int) -> None:
        """Move the restart point: records below ``offset`` need no replay."""
