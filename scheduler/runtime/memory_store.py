"""An in-memory :class:`RequestStore` for unit tests of the runtime.

Same contract as the broker adapter (the contract tests run one suite on
both), plus levers a test needs: ``gate`` holds every write until it is set
(to see what the runtime does while a write is under way), ``broken`` makes
every write fail as a failed disk would, and :meth:`reopen` gives a fresh
store over the same data, as a restart would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from scheduler.runtime.errors import ServingError, ServingUnavailableError, TooMuchError
from scheduler.runtime.finished import (
    ENTRY_PROPERTIES,
    FINISHED_TOPIC,
    FinishedFold,
    entry_body,
    snapshot_parts,
    snapshot_properties,
)
from scheduler.runtime.records import (
    DoneRecord,
    SubmitRecord,
    done_properties,
    parse_record,
    submit_properties,
)
from scheduler.runtime.store import (
    Appended,
    DoneWrite,
    FinishedWrite,
    Recalled,
    Replayed,
    ReplyCollector,
    ReplyScan,
    StoredPayload,
    Write,
)

__all__ = ["MemoryData", "MemoryRequestStore", "StoredMessage"]

QueueKey = tuple[str, str, str]  # namespace, topic, lite
_REQUESTS: QueueKey = ("", "requests", "")
_FINISHED: QueueKey = ("", FINISHED_TOPIC, "")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    properties: Mapping[str, str]
    body: bytes


@dataclass
class MemoryData:
    """What survives a "restart": the queues, the restart point, the boot count."""

    queues: dict[QueueKey, list[StoredMessage]] = field(default_factory=dict)
    committed: int = 0
    boots: int = 0
    finished_from: int = 0  # the finished journal's first kept offset (trimmed below)

    def queue(self, key: QueueKey) -> list[StoredMessage]:
        return self.queues.setdefault(key, [])

    def replies(self, tenant: str, topic: str, lite: str) -> list[StoredMessage]:
        return list(self.queues.get((tenant, topic, lite), ()))


class MemoryRequestStore:
    """A :class:`~scheduler.runtime.store.RequestStore` in dicts."""

    def __init__(self, data: MemoryData | None = None, *, max_payload_bytes: int = 1 << 30) -> None:
        self.data = data if data is not None else MemoryData()
        self.max_payload_bytes = max_payload_bytes
        self.gate: asyncio.Event | None = None
        self.broken = False
        self.writes = 0  # write() calls, to see batching
        self.submit_writes = 0  # append_submits() calls

    def reopen(self) -> MemoryRequestStore:
        return MemoryRequestStore(self.data, max_payload_bytes=self.max_payload_bytes)

    async def _pass(self) -> None:
        await asyncio.sleep(0)  # a real store always yields to the loop
        if self.gate is not None:
            await self.gate.wait()
        if self.broken:
            raise ServingUnavailableError("the store cannot serve this now: the test broke it")

    async def boot(self, floor: int) -> int:
        await self._pass()
        self.data.boots = max(self.data.boots + 1, floor)
        return self.data.boots

    async def replay(self) -> Replayed:
        await self._pass()
        queue = self.data.queue(_REQUESTS)
        records: list[tuple[int, SubmitRecord | DoneRecord]] = []
        for offset in range(self.data.committed, len(queue)):
            record = parse_record(queue[offset].properties)
            if record is not None:
                records.append((offset, record))
        return Replayed(tuple(records), self.data.committed, len(queue))

    async def append_submit(
        self, record: SubmitRecord, payload: bytes | AsyncIterator[bytes]
    ) -> Appended:
        if isinstance(payload, bytes):
            body = payload
        else:
            body = b"".join([piece async for piece in payload])
        await self._pass()
        if len(body) > self.max_payload_bytes:
            raise TooMuchError(
                f"payload is {len(body)} bytes; the limit is {self.max_payload_bytes}"
            )
        return self._append(record, body)

    async def append_submits(
        self, items: Sequence[tuple[SubmitRecord, bytes]]
    ) -> list[Appended | ServingError]:
        await self._pass()
        self.submit_writes += 1
        out: list[Appended | ServingError] = []
        for record, payload in items:
            if len(payload) > self.max_payload_bytes:
                out.append(
                    TooMuchError(
                        f"payload is {len(payload)} bytes; the limit is {self.max_payload_bytes}"
                    )
                )
                continue
            out.append(self._append(record, payload))
        return out

    def _append(self, record: SubmitRecord, body: bytes) -> Appended:
        reply_from = len(self.data.queue((record.tenant, record.reply_topic, record.reply_lite)))
        properties = submit_properties(replace(record, reply_from=reply_from))
        queue = self.data.queue(_REQUESTS)
        queue.append(StoredMessage(MappingProxyType(properties), body))
        return Appended(len(queue) - 1, reply_from)

    async def write(self, items: Sequence[Write]) -> list[int]:
        await self._pass()
        self.writes += 1
        offsets = []
        for item in items:
            if isinstance(item, DoneWrite):
                queue = self.data.queue(_REQUESTS)
                properties = done_properties(item.record)
                queue.append(StoredMessage(MappingProxyType(properties), b""))
            elif isinstance(item, FinishedWrite):
                queue = self.data.queue(_FINISHED)
                queue.append(StoredMessage(ENTRY_PROPERTIES, entry_body(item.view)))
            else:
                queue = self.data.queue((item.tenant, item.topic, item.lite))
                queue.append(StoredMessage(MappingProxyType(dict(item.properties)), item.body))
            offsets.append(len(queue) - 1)
        return offsets

    async def read_payload(self, offset: int, inline_limit: int) -> StoredPayload:
        await self._pass()
        if offset < self.data.committed:  # as the broker's: trimmed with the commit
            raise ServingUnavailableError(
                f"the payload at requests offset {offset} is gone (below the restart point)"
            )
        body = self.data.queue(_REQUESTS)[offset].body
        if len(body) <= inline_limit:
            return StoredPayload(len(body), body, None)
        return StoredPayload(len(body), None, _pieces(body, max(1, inline_limit)))

    async def scan_reply(
        self, tenant: str, topic: str, lite: str, from_offset: int, request_id: str
    ) -> ReplyScan:
        await self._pass()
        collect = ReplyCollector(request_id)
        messages = self.data.queues.get((tenant, topic, lite), [])
        for offset in range(from_offset, len(messages)):
            message = messages[offset]
            if collect.add(offset, message.properties, message.body):
                break
        return collect.scan()

    async def commit(self, offset: int) -> None:
        await self._pass()
        self.data.committed = offset

    async def recall_finished(self, limit: int) -> Recalled:
        await self._pass()
        fold, _ = self._fold(limit)
        return Recalled(tuple(fold.views()), fold.entries_after_snapshot())

    async def compact_finished(self, limit: int) -> int:
        await self._pass()
        fold, end = self._fold(limit)
        if not end:
            return 0
        views = fold.views()
        # In parts, as the broker's (its inline size, 1 MiB by default, at most
        # the largest payload this store takes).
        bodies = snapshot_parts(views, min(1 << 20, self.max_payload_bytes))
        journal = self.data.queue(_FINISHED)
        for at, body in enumerate(bodies):
            properties = snapshot_properties(end, at, len(bodies))
            journal.append(StoredMessage(MappingProxyType(properties), body))
        self.data.finished_from = max(self.data.finished_from, end)
        return len(views)

    def _fold(self, limit: int) -> tuple[FinishedFold, int]:
        fold = FinishedFold(limit)
        journal = self.data.queues.get(_FINISHED, [])
        for offset in range(self.data.finished_from, len(journal)):
            fold.add(offset, journal[offset].properties, journal[offset].body)
        return fold, len(journal)


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(body), size):
        await asyncio.sleep(0)
        yield body[at : at + size]
