"""Reading many requests' replies over one subscription.

A request's reply is the run of messages tagged with its id in its reply
lite-topic, from ``reply_offset`` on: chunks 0, 1, 2 ... then one end mark.
:class:`ReplyRouter` holds one subscription (which reconnects and resumes
by itself) and adds each watched request's lite-topic to it at the
request's ``reply_offset``; a lite-topic shared by several requests of one
session is subscribed once, from the earliest offset any of them needs,
and removed when the last of them ended. Each :class:`ReplyWatch` gets its
own request's events in order; an index seen before (a redelivery after a
reconnect) is dropped and counted, so a reader never sees a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tidegate.aio import AsyncClient
from tidegate.aio_subscription import AsyncSubscription
from tidegate.channel import Channel
from tidegate.errors import CallFailed, ClientClosed, FailedPrecondition
from tidegate.inference_values import ReplyChunk, ReplyEnd, ReplyEvent, Submitted
from tidegate.inference_wire import PROP_REQUEST, reply_event
from tidegate.values import QueueRef, Start

__all__ = ["ReplyRouter", "ReplyWatch"]

log = logging.getLogger("tidegate.client")


@dataclass(eq=False)
class ReplyWatch:
    """One request's reply events, in order, ending with a :class:`ReplyEnd`.

    ``async for event in watch`` or ``await watch.next()``. ``duplicates``
    counts chunks received twice (dropped here).
    """

    submitted: Submitted
    # What is due to the reader: one hop per chunk of every watched reply.
    _items: Channel[ReplyEvent | BaseException] = field(default_factory=Channel)
    next_index: int = 0
    duplicates: int = 0
    ended: bool = False

    @property
    def request_id(self) -> str:
        return self.submitted.request_id

    def _feed(self, event: ReplyEvent) -> bool:
        """Deliver ``event`` if it is the next one; True once the reply has ended."""
        if self.ended:
            return True
        if isinstance(event, ReplyChunk):
            if event.index < self.next_index:
                self.duplicates += 1
                return False
            if event.index > self.next_index:
                self._fail(
                    FailedPrecondition(
                        f"reply of {self.request_id}: chunk {event.index} arrived where "
                        f"{self.next_index} was due (a gap)"
                    )
                )
                return True
            self.next_index += 1
            self._put(event)
            return False
        if event.chunks < self.next_index:
            self.duplicates += 1  # an end mark at an index already passed cannot be ours
            return False
        self.ended = True
        self._put(event)
        return True

    def _fail(self, error: BaseException) -> None:
        if not self.ended:
            self.ended = True
            self._put(error)

    def _put(self, item: ReplyEvent | BaseException) -> None:
        self._items.put(item)

    async def next(self) -> ReplyEvent:
        item = await self._items.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[ReplyEvent]:
        while True:
            event = await self.next()
            yield event
            if isinstance(event, ReplyEnd):
                return


class ReplyRouter:
    """Replies of many requests of one tenant over one subscription."""

    def __init__(self, broker: AsyncClient, *, buffer: int = 2000) -> None:
        self._broker = broker
        self._buffer = buffer
        self._sub: AsyncSubscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._watches: dict[str, ReplyWatch] = {}
        self._holders: dict[QueueRef, int] = {}
        self._starts: dict[QueueRef, int] = {}
        self.duplicates = 0

    @property
    def watching(self) -> int:
        return len(self._watches)

    async def _subscription(self) -> AsyncSubscription:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._sub is None:
                self._sub = await self._broker.subscribe(buffer=self._buffer, wait=False)
                self._pump = asyncio.create_task(self._run(self._sub), name="reply-router")
        return self._sub

    async def watch(self, submitted: Submitted) -> ReplyWatch:
        """Start reading ``submitted``'s reply (call once per request)."""
        sub = await self._subscription()
        rid = submitted.request_id
        if rid in self._watches:
            raise FailedPrecondition(f"request {rid} is already watched")
        watch = ReplyWatch(submitted)
        self._watches[rid] = watch
        ref = QueueRef(submitted.reply_topic, submitted.reply_lite_topic)
        held = self._holders.get(ref, 0)
        self._holders[ref] = held + 1
        start = submitted.reply_offset
        if held == 0 or start < self._starts.get(ref, start):
            # The start is explicit, so nothing is missed while the server confirms.
            # A request of the same session watched after a later one moves the
            # start back: what comes twice is dropped by the chunk index.
            self._starts[ref] = start
            await sub.add(ref.topic, [ref.lite_topic], start=Start.at(start), wait=False)
        return watch

    async def stream(self, submitted: Submitted) -> AsyncIterator[ReplyEvent]:
        """The events of one request's reply, ending with its :class:`ReplyEnd`."""
        watch = await self.watch(submitted)
        while True:  # watch's own iterator, inlined: one generator less per chunk
            event = await watch.next()
            yield event
            if isinstance(event, ReplyEnd):
                return

    async def _run(self, sub: AsyncSubscription) -> None:
        try:
            async for message in sub:
                rid = message.properties.get(PROP_REQUEST)
                watch = None if rid is None else self._watches.get(rid)
                if watch is None or rid is None:
                    continue
                event = reply_event(rid, message.properties, message.body, message.offset)
                if event is None:
                    continue
                before = watch.duplicates
                if watch._feed(event):
                    await self._forget(watch, message.ref)
                self.duplicates += watch.duplicates - before
        except (CallFailed, ClientClosed) as exc:
            for watch in list(self._watches.values()):
                watch._fail(exc)
            self._watches.clear()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours: every reader hears of it
            log.exception("reply router failed")
            for watch in list(self._watches.values()):
                watch._fail(exc)
            self._watches.clear()

    async def _forget(self, watch: ReplyWatch, ref: QueueRef) -> None:
        self._watches.pop(watch.request_id, None)
        held = self._holders.get(ref, 0) - 1
        if held > 0:
            self._holders[ref] = held
            return
        self._holders.pop(ref, None)
        self._starts.pop(ref, None)
        sub = self._sub
        if sub is not None:
            with contextlib.suppress(CallFailed, ClientClosed):
                await sub.remove(ref.topic, [ref.lite_topic], wait=False)

    async def close(self) -> None:
        pump, self._pump = self._pump, None
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.close()
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        for watch in list(self._watches.values()):
            watch._fail(ClientClosed("the reply router was closed"))
        self._watches.clear()
