"""The real :class:`RequestStore`: the broker of the same server, through its hub.

Every broker call runs in the hub's thread pool (the broker blocks on fsync
and RocksDB), except the appends that cannot wait for the disk under
``fsync: interval``: those run on the loop (:meth:`Hub.run_write`). The
runtime's records live in the empty namespace, which no tenant can address;
replies go to the tenant's own lite-topics, where the broker's event-driven
pull delivers them to subscribers as usual.

Broker errors become the runtime's here, in :func:`_translated`, and nowhere
else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial

from broker.errors import (
    BrokerError,
    InvalidArgument,
    LimitExceeded,
    MessageTooLarge,
    NotFound,
)
from broker.hub import Hub
from broker.publishing_stream import Pipe
from broker.types import Message, PublishRequest, QueueName
from scheduler.runtime.errors import (
    InvalidFieldError,
    ServingError,
    ServingUnavailableError,
    TooMuchError,
)
from scheduler.runtime.finished import (
    ENTRY_PROPERTIES,
    FINISHED_TOPIC,
    FinishedFold,
    entry_body,
    snapshot_parts,
    snapshot_properties,
)
from scheduler.runtime.records import (
    BOOTS_LITE,
    BOOTS_TOPIC,
    GROUP,
    REQUESTS_TOPIC,
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
    ReplyWrite,
    StoredPayload,
    Write,
)

__all__ = ["BrokerRequestStore"]

_REQUESTS = QueueName("", REQUESTS_TOPIC)
_BOOTS = QueueName("", BOOTS_TOPIC, BOOTS_LITE)
_FINISHED = QueueName("", FINISHED_TOPIC)
_FOLD_PAGE = 1024  # journal records read per hold of the broker's lock


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except (LimitExceeded, MessageTooLarge) as exc:
        raise TooMuchError(str(exc)) from None
    except InvalidArgument as exc:
        raise InvalidFieldError(str(exc)) from None
    except BrokerError as exc:  # closed, or a failed write: the store refuses until reopened
        raise ServingUnavailableError(f"the store cannot serve this now: {exc}") from exc


class BrokerRequestStore:
    """A :class:`~scheduler.runtime.store.RequestStore` over the server's hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._broker = hub.broker

    async def boot(self, floor: int) -> int:
        with _translated():
            return await self._hub.run(self._boot, floor)

    def _boot(self, floor: int) -> int:
        broker = self._broker
        number = 0
        with contextlib.suppress(NotFound):
            end = broker.queue_info(_BOOTS).next_offset
            if end:
                last = broker.read(_BOOTS, end - 1, 1)
                if last:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        number = int(json.loads(last[0].body)["boot"])
        number = max(number + 1, floor)
        body = json.dumps({"boot": number}).encode()
        (stored,) = broker.publish_batch([PublishRequest(BOOTS_TOPIC, body, (BOOTS_LITE,), {}, "")])
        broker.sync()  # whatever the fsync policy: a boot number must never repeat
        broker.trim(_BOOTS, stored.offsets[0])  # only the last boot is ever read
        return number

    async def replay(self) -> Replayed:
        with _translated():
            return await self._hub.run(self._replay)

    def _replay(self) -> Replayed:
        broker = self._broker
        try:
            info = broker.queue_info(_REQUESTS)
        except NotFound:
            return Replayed((), 0, 0)
        start = broker.committed_offset(GROUP, _REQUESTS) or 0
        broker.trim(_REQUESTS, start)  # in case the last run stopped between commit and trim
        page = broker.settings.max_read_messages
        records: list[tuple[int, SubmitRecord | DoneRecord]] = []
        offset = start
        while offset < info.next_offset:
            found = broker.read(_REQUESTS, offset, page)
            if not found:
                break
            for message in found:
                record = parse_record(message.properties)
                if record is not None:
                    records.append((message.offset, record))
            offset = found[-1].offset + 1
        return Replayed(tuple(records), start, info.next_offset)

    async def append_submit(
        self, record: SubmitRecord, payload: bytes | AsyncIterator[bytes]
    ) -> Appended:
        with _translated():
            if isinstance(payload, bytes):
                return await self._hub.run_write(
                    len(payload), 1, self._append_submit, record, payload
                )
            # Pieces go through a bounded pipe into the thread that writes them as
            # chunk records, so a large payload is never held whole.
            pipe = Pipe(asyncio.get_running_loop())
            writing = asyncio.ensure_future(self._hub.run(self._append_submit, record, pipe))
            writing.add_done_callback(
                lambda _: pipe.abandon()
            )  # a put must not wait on a dead reader
            try:
                async for piece in payload:
                    if writing.done():
                        break  # the writer failed (e.g. too large): its error wins
                    await pipe.put(piece)
            except BaseException as exc:
                pipe.close(InvalidArgument(f"the payload stream broke off: {exc}"))
                with contextlib.suppress(Exception):
                    await writing
                raise
            pipe.close()
            return await writing

    def _append_submit(self, record: SubmitRecord, payload: bytes | Iterable[bytes]) -> Appended:
        reply_from = self._reply_from(record)
        properties = submit_properties(replace(record, reply_from=reply_from))
        stored = self._broker.publish_batch(
            [PublishRequest(REQUESTS_TOPIC, payload, (), properties, "")]
        )
        return Appended(stored[0].offsets[0], reply_from)

    async def append_submits(
        self, items: Sequence[tuple[SubmitRecord, bytes]]
    ) -> list[Appended | ServingError]:
        with _translated():
            size = sum(len(payload) for _, payload in items)
            return await self._hub.run_write(size, len(items), self._append_submits, items)

    def _append_submits(
        self, items: Sequence[tuple[SubmitRecord, bytes]]
    ) -> list[Appended | ServingError]:
        out: list[Appended | ServingError | None] = []
        requests: list[PublishRequest] = []
        starts: list[int] = []
        for record, payload in items:
            try:
                reply_from = self._reply_from(record)
            except LimitExceeded as exc:
                out.append(TooMuchError(str(exc)))
                continue
            properties = submit_properties(replace(record, reply_from=reply_from))
            requests.append(PublishRequest(REQUESTS_TOPIC, payload, (), properties, ""))
            starts.append(reply_from)
            out.append(None)
        stored = iter(self._broker.publish_batch(requests) if requests else ())
        froms = iter(starts)
        return [
            item if item is not None else Appended(next(stored).offsets[0], next(froms))
            for item in out
        ]

    def _reply_from(self, record: SubmitRecord) -> int:
        """Where the request's reply starts: the end of its reply lite-topic, or 0
        for a new one, which must fit the tenant's limit (it is created, and
        counted, with the request's first output)."""
        reply = QueueName(record.tenant, record.reply_topic, record.reply_lite)
        try:
            return self._broker.queue_info(reply).next_offset
        except NotFound:
            self._check_room(record.tenant)
            return 0

    def _check_room(self, tenant: str) -> None:
        quotas = self._hub.quotas
        limit = quotas.limit(tenant).max_lite_topics
        have = quotas.lite_topics(tenant)
        if limit is not None and have + 1 > limit:
            raise LimitExceeded(
                f"tenant {tenant!r} holds {have} live lite-topics and this request's reply "
                f"needs a new one, above its limit max_lite_topics={limit}"
            )

    async def write(self, items: Sequence[Write]) -> list[int]:
        with _translated():
            size = sum(len(item.body) for item in items if isinstance(item, ReplyWrite))
            return await self._hub.run_write(size, len(items), self._write, items)

    def _write(self, items: Sequence[Write]) -> list[int]:
        requests: list[PublishRequest] = []
        replies: dict[str, list[PublishRequest]] = {}
        for item in items:
            if isinstance(item, DoneWrite):
                props = done_properties(item.record)
                requests.append(PublishRequest(REQUESTS_TOPIC, b"", (), props, ""))
                continue
            if isinstance(item, FinishedWrite):
                body = entry_body(item.view)
                requests.append(PublishRequest(FINISHED_TOPIC, body, (), ENTRY_PROPERTIES, ""))
                continue
            lites = (item.lite,)
            request = PublishRequest(item.topic, item.body, lites, item.properties, item.tenant)
            requests.append(request)
            replies.setdefault(item.tenant, []).append(request)
        hub = self._hub
        for tenant, mine in replies.items():
            # Admission checked the room; count what this write creates, past the
            # limit if need be: refusing here would fail other requests' output.
            new = hub.new_lite_topics(tenant, mine)
            if new:
                hub.quotas.set_lite_topics(tenant, hub.quotas.lite_topics(tenant) + new)
        return [result.offsets[0] for result in self._broker.publish_batch(requests)]

    async def read_payload(self, offset: int, inline_limit: int) -> StoredPayload:
        with _translated():
            message = await self._hub.run(self._exact, _REQUESTS, offset)
            if message.size <= inline_limit:
                data = message.body
                if message.chunked:
                    data = await self._hub.run(self._whole, message)
                return StoredPayload(message.size, data, None)
        if not message.chunked:
            return StoredPayload(message.size, None, _split(message.body, inline_limit))
        return StoredPayload(message.size, None, self._pieces(message))

    async def _pieces(self, message: Message) -> AsyncIterator[bytes]:
        with _translated():
            chunks = await self._hub.run(self._broker.open_body, message)
            while True:
                chunk = await self._hub.run(next, chunks, None)
                if chunk is None:
                    return
                yield chunk

    def _exact(self, queue: QueueName, offset: int) -> Message:
        found = self._broker.read(queue, offset, 1)
        if not found or found[0].offset != offset:
            raise ServingUnavailableError(
                f"the payload at {queue} offset {offset} is gone (retention removed it?)"
            )
        return found[0]

    def _whole(self, message: Message) -> bytes:
        return b"".join(self._broker.open_body(message))

    async def scan_reply(
        self, tenant: str, topic: str, lite: str, from_offset: int, request_id: str
    ) -> ReplyScan:
        with _translated():
            return await self._hub.run(
                self._scan, QueueName(tenant, topic, lite), from_offset, request_id
            )

    def _scan(self, queue: QueueName, from_offset: int, request_id: str) -> ReplyScan:
        broker = self._broker
        page = broker.settings.max_read_messages
        collect = ReplyCollector(request_id)
        offset = from_offset
        done = False
        while not done:
            try:
                found = broker.read(queue, offset, page)
            except NotFound:
                break
            if not found:
                break
            for message in found:
                body = partial(self._body, message)
                if done := collect.add(message.offset, message.properties, body):
                    break
            offset = found[-1].offset + 1
        return collect.scan()

    def _body(self, message: Message) -> bytes:
        return self._whole(message) if message.chunked else message.body

    async def commit(self, offset: int) -> None:
        with _translated():
            await self._hub.run(self._commit, offset)

    def _commit(self, offset: int) -> None:
        with contextlib.suppress(NotFound):  # nothing was ever submitted
            self._broker.commit_offset(GROUP, _REQUESTS, offset)
            # Below the restart point nothing is read again: drop those records,
            # so finished requests stop holding the log's start (the next expiry
            # pass deletes the segments no queue needs any more).
            self._broker.trim(_REQUESTS, offset)

    async def recall_finished(self, limit: int) -> Recalled:
        with _translated():
            return await self._hub.run(self._recall, limit)

    def _recall(self, limit: int) -> Recalled:
        fold, _ = self._fold(limit)
        return Recalled(tuple(fold.views()), fold.entries_after_snapshot())

    async def compact_finished(self, limit: int) -> int:
        with _translated():
            return await self._hub.run(self._compact, limit)

    def _compact(self, limit: int) -> int:
        broker = self._broker
        fold, end = self._fold(limit)
        if not end:
            return 0
        views = fold.views()
        # Parts the size of an inline message: never above max_message_bytes
        # (100,000 views take some MiB), never chunked, quick to decode.
        settings = broker.settings
        bodies = snapshot_parts(views, min(settings.chunk_bytes, settings.max_message_bytes))
        parts = len(bodies)
        broker.publish_batch(
            [
                PublishRequest(FINISHED_TOPIC, body, (), snapshot_properties(end, at, parts), "")
                for at, body in enumerate(bodies)
            ]
        )
        # Durable before the trim, whatever the fsync policy: the trim's index
        # change may outlive a log tail that a crash tears off.
        broker.sync()
        broker.trim(_FINISHED, end)
        return len(views)

    def _fold(self, limit: int) -> tuple[FinishedFold, int]:
        """The journal folded up to its end now, and that end (0: no journal yet)."""
        broker = self._broker
        fold = FinishedFold(limit)
        try:
            end = broker.queue_info(_FINISHED).next_offset
        except NotFound:
            return fold, 0
        # Small pages: each read holds the broker's lock (publishes wait), and
        # 10,000 entries take ~50 ms to read.
        page = min(broker.settings.max_read_messages, _FOLD_PAGE)
        offset = 0  # below the first kept one: reads start at it
        while offset < end:
            found = broker.read(_FINISHED, offset, min(page, end - offset))
            if not found:
                break
            for message in found:
                if message.offset >= end:
                    break
                fold.add(message.offset, message.properties, partial(self._body, message))
            offset = found[-1].offset + 1
        return fold, end


async def _split(body: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(body), max(1, size)):
        yield body[at : at + size]
