"""One contract for both request stores: the broker adapter and the in-memory one."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker import Broker, BrokerSettings
from broker.hub import Hub
from broker.log.commitlog import FsyncPolicy
from broker.tenancy import Quotas, TenantLimits
from scheduler.runtime import BrokerRequestStore, MemoryRequestStore, RequestStore
from scheduler.runtime.errors import InvalidFieldError, TooMuchError
from scheduler.runtime.records import (
    DoneRecord,
    SubmitRecord,
    chunk_properties,
    end_properties,
)
from scheduler.runtime.store import Appended, DoneWrite, FinishedWrite, ReplyWrite
from tests.support.views import finished_view

pytestmark = pytest.mark.integration


def record(rid: str, tenant: str = "acme", lite: str = "s-1") -> SubmitRecord:
    return SubmitRecord(
        request_id=rid,
        tenant=tenant,
        priority=1,
        input_tokens=10,
        output_tokens=20,
        session=lite,
        reply_topic="chatbot",
        reply_lite=lite,
        reply_from=999,  # ignored: the store sets it
        deadline_wall=1.7e9 + 5,
        admitted_at=1.7e9,
        properties={"model": "tiny"},
    )


class Stores:
    """Opens the same store again and again (a restart), for both kinds."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self.memory = MemoryRequestStore(max_payload_bytes=1 << 20)

    @asynccontextmanager
    async def open(
        self, limits: dict[str, TenantLimits] | None = None
    ) -> AsyncIterator[RequestStore]:
        if self.kind == "memory":
            yield self.memory.reopen()
            return
        settings = BrokerSettings(fsync=FsyncPolicy.INTERVAL, max_message_bytes=1 << 20)
        broker = Broker.open(self.directory, settings)
        hub = Hub(broker, quotas=Quotas(limits or {}), threads=2)
        await hub.start()
        try:
            yield BrokerRequestStore(hub)
        finally:
            await hub.stop()
            broker.close()


@pytest.fixture(params=["memory", "broker"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return Stores(request.param, tmp_path / "store")


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_boot_numbers_grow_across_opens(stores: Stores) -> None:
    async def body() -> None:
        async with stores.open() as store:
            assert await store.boot(0) == 1
        async with stores.open() as store:
            assert await store.boot(0) == 2
        async with stores.open() as store:
            assert await store.boot(1000) == 1000  # the wall-clock floor wins
        async with stores.open() as store:
            assert await store.boot(10) == 1001  # and a clock gone back does not

    run(body)


def test_submits_replay_with_done_records_from_the_restart_point(stores: Stores) -> None:
    async def body() -> None:
        async with stores.open() as store:
            first = await store.append_submit(record("a"), b"payload-a")
            assert (first.offset, first.reply_from) == (0, 0)
            await store.write(
                [ReplyWrite("acme", "chatbot", "s-1", chunk_properties("a", 0), b"x")]
            )
            second = await store.append_submit(record("b"), b"payload-b")
            assert second.reply_from == 1  # the reply lite-topic's end at admission
            offsets = await store.write([DoneWrite(DoneRecord("a", "completed"))])
            assert offsets == [2]
            await store.commit(1)
        async with stores.open() as store:
            replayed = await store.replay()
            assert (replayed.start, replayed.end) == (1, 3)
            kinds = [(o, type(r).__name__, r.request_id) for o, r in replayed.records]
            assert kinds == [(1, "SubmitRecord", "b"), (2, "DoneRecord", "a")]
            submit = replayed.records[0][1]
            assert isinstance(submit, SubmitRecord)
            assert submit.reply_from == 1
            assert submit.properties == {"model": "tiny"}
            assert submit.deadline_wall == 1.7e9 + 5
            payload = await store.read_payload(1, 1 << 20)
            assert (payload.size, payload.data) == (9, b"payload-b")

    run(body)


def test_streamed_and_large_payloads(stores: Stores) -> None:
    async def body() -> None:
        big = bytes(range(256)) * 4096  # 1 MiB

        async def pieces() -> AsyncIterator[bytes]:
            for at in range(0, len(big), 100_000):
                yield big[at : at + 100_000]

        async with stores.open() as store:
            appended = await store.append_submit(record("a"), pieces())
            whole = await store.read_payload(appended.offset, 2 << 20)
            assert whole.data == big
            split = await store.read_payload(appended.offset, 1000)
            assert split.data is None
            assert split.size == len(big)
            assert split.pieces is not None
            assert b"".join([p async for p in split.pieces]) == big

            async def broken() -> AsyncIterator[bytes]:
                yield b"abc"
                raise ConnectionError("client went away")

            with pytest.raises(ConnectionError):
                await store.append_submit(record("b"), broken())

            async def too_big() -> AsyncIterator[bytes]:
                for _ in range(3):
                    yield big[:600_000]

            with pytest.raises((TooMuchError, InvalidFieldError)):
                await store.append_submit(record("c"), too_big())
            replayed = await store.replay()
            assert [r.request_id for _, r in replayed.records] == ["a"]

    run(body)


def test_scan_reply_finds_one_requests_chunks_and_end(stores: Stores) -> None:
    async def body() -> None:
        async with stores.open() as store:
            writes = [
                ReplyWrite("acme", "chatbot", "s-1", chunk_properties("a", 0), b"a0"),
                ReplyWrite("acme", "chatbot", "s-1", chunk_properties("b", 0), b"b0"),
                ReplyWrite("acme", "chatbot", "s-1", {"other": "message"}, b"z"),
                ReplyWrite("acme", "chatbot", "s-1", chunk_properties("a", 1), b"a1"),
            ]
            assert await store.write(writes) == [0, 1, 2, 3]
            scan = await store.scan_reply("acme", "chatbot", "s-1", 0, "a")
            assert (scan.chunks, scan.end, scan.first_offset) == ((b"a0", b"a1"), None, 0)
            await store.write(
                [ReplyWrite("acme", "chatbot", "s-1", end_properties("a", 2, "completed"), b"")]
            )
            ended = await store.scan_reply("acme", "chatbot", "s-1", 0, "a")
            assert ended.end is not None
            assert ended.end.outcome == "completed"
            nothing = await store.scan_reply("acme", "chatbot", "nobody", 0, "a")
            assert (nothing.chunks, nothing.end, nothing.first_offset) == ((), None, None)
            other = await store.scan_reply("beta", "chatbot", "s-1", 0, "a")  # another namespace
            assert other.chunks == ()

    run(body)


def test_reply_lite_topics_count_against_the_tenant_limit(tmp_path: Path) -> None:
    async def body() -> None:
        stores = Stores("broker", tmp_path / "store")
        async with stores.open({"acme": TenantLimits(max_lite_topics=1)}) as store:
            await store.append_submit(record("a", lite="s-1"), b"p")
            await store.append_submit(record("b", lite="s-1"), b"p")  # the same one: fine
            first = ReplyWrite("acme", "chatbot", "s-1", chunk_properties("a", 0), b"")
            await store.write([first])  # creates and counts it
            with pytest.raises(TooMuchError, match="max_lite_topics=1"):
                await store.append_submit(record("c", lite="s-2"), b"p")

    run(body)


def test_submits_in_one_write_with_errors_in_their_places(tmp_path: Path) -> None:
    async def body() -> None:
        stores = Stores("broker", tmp_path / "store")
        async with stores.open({"acme": TenantLimits(max_lite_topics=0)}) as store:
            results = await store.append_submits(
                [
                    (record("a", tenant="beta", lite="x"), b"pa"),
                    (record("b", tenant="acme", lite="y"), b"pb"),  # no room for its reply
                    (record("c", tenant="beta", lite="x"), b"pc"),
                ]
            )
            assert isinstance(results[1], TooMuchError)
            assert [getattr(r, "offset", None) for r in results] == [0, None, 1]
            replayed = await store.replay()
            assert [r.request_id for _, r in replayed.records] == ["a", "c"]
            payload = await store.read_payload(1, 1 << 20)
            assert payload.data == b"pc"

    run(body)


def test_append_submits_matches_append_submit(stores: Stores) -> None:
    async def body() -> None:
        async with stores.open() as store:
            one = await store.append_submit(record("a"), b"one")
            await store.write([ReplyWrite("acme", "chatbot", "s-1", chunk_properties("a", 0), b"")])
            many = await store.append_submits([(record("b"), b"two"), (record("c"), b"three")])
            assert one == Appended(0, 0)
            assert many == [Appended(1, 1), Appended(2, 1)]
            replayed = await store.replay()
            assert [r.request_id for _, r in replayed.records] == ["a", "b", "c"]

    run(body)


def test_finished_views_are_recalled_across_opens_and_compactions(stores: Stores) -> None:
    async def body() -> None:
        async with stores.open() as store:
            empty = await store.recall_finished(10)
            assert (empty.views, empty.entries) == ((), 0)
            assert await store.compact_finished(10) == 0  # nothing to fold
            a, b = finished_view("a"), finished_view("b", "cancelled", "")
            assert await store.write([FinishedWrite(a), FinishedWrite(b)]) == [0, 1]
        async with stores.open() as store:
            recalled = await store.recall_finished(10)
            assert (recalled.views, recalled.entries) == ((a, b), 2)
            assert (await store.recall_finished(1)).views == (b,)  # the last ones
            assert await store.compact_finished(10) == 2
            c = finished_view("c")
            await store.write([FinishedWrite(c)])
            recalled = await store.recall_finished(10)
            assert (recalled.views, recalled.entries) == ((a, b, c), 1)
            # finished again (after a torn write): counts from here
            again = finished_view("a", "failed")
            await store.write([FinishedWrite(again)])
            assert await store.compact_finished(3) == 3
        async with stores.open() as store:
            recalled = await store.recall_finished(10)
            assert (recalled.views, recalled.entries) == ((b, c, again), 0)

    run(body)


def test_a_final_view_is_stored_whatever_its_reason_holds(stores: Stores) -> None:
    # A worker's failure message, non-ASCII: 59,500 bytes of UTF-8, within the
    # end mark's and the done record's property limits (64 KiB a value). Its
    # final view must be stored in the same write: refused, it would fail the
    # write and with it the runtime.
    reason = "échec " * 8_500
    view = replace(finished_view("a", "failed"), reason=reason)

    async def body() -> None:
        async with stores.open() as store:
            end = end_properties("a", 0, "failed", reason=reason)
            await store.write(
                [
                    ReplyWrite("acme", "chatbot", "req-a", end, b""),
                    FinishedWrite(view),
                    DoneWrite(DoneRecord("a", "failed", reason)),
                ]
            )
        async with stores.open() as store:
            assert (await store.recall_finished(10)).views == (view,)

    run(body)


def test_a_snapshot_above_the_message_limit_is_stored_in_parts(stores: Stores) -> None:
    # Both stores here take messages of 1 MiB at most; these views hold about
    # 1.6 MiB that compress badly. The compaction must still fold them all
    # and free the journal, and a restart read them back.
    noise = random.Random(7)
    views = [
        replace(finished_view(f"r{i}"), reason=base64.b85encode(noise.randbytes(32_000)).decode())
        for i in range(40)
    ]

    async def body() -> None:
        async with stores.open() as store:
            await store.write([FinishedWrite(view) for view in views])
            assert await store.compact_finished(100) == 40
            c = finished_view("c")
            await store.write([FinishedWrite(c)])
            recalled = await store.recall_finished(100)
            assert (recalled.views, recalled.entries) == ((*views, c), 1)
        async with stores.open() as store:
            recalled = await store.recall_finished(100)
            assert (recalled.views, recalled.entries) == ((*views, c), 1)
            assert await store.compact_finished(100) == 41
        async with stores.open() as store:
            recalled = await store.recall_finished(100)
            assert (recalled.views, recalled.entries) == ((*views, c), 0)

    run(body)
