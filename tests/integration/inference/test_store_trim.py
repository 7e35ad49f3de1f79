"""Moving the restart point drops the records below it, in both request stores,
and in the broker frees the log segments finished requests held; so does
compacting the journal of finished requests' final views."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from broker import Broker, BrokerSettings, QueueName
from broker.hub import Hub
from broker.log.commitlog import FsyncPolicy
from broker.tenancy import Quotas
from scheduler.runtime import BrokerRequestStore
from scheduler.runtime.errors import ServingUnavailableError
from scheduler.runtime.records import BOOTS_LITE, BOOTS_TOPIC, REQUESTS_TOPIC, DoneRecord
from scheduler.runtime.store import DoneWrite, FinishedWrite
from tests.integration.inference.test_store_contract import Stores, record, run
from tests.support.views import finished_view

pytestmark = pytest.mark.integration

_REQUESTS = QueueName("", REQUESTS_TOPIC)


def done(rid: str) -> DoneWrite:
    return DoneWrite(DoneRecord(rid, "completed"))


@pytest.fixture(params=["memory", "broker"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    return Stores(request.param, tmp_path / "store")


def test_a_commit_drops_the_payloads_below_it(stores: Stores) -> None:
    async def body() -> None:
        async with stores.open() as store:
            first = await store.append_submit(record("r0"), b"p0")
            await store.write([done("r0")])
            open_one = await store.append_submit(record("r1"), b"p1")
            await store.commit(open_one.offset)
            with pytest.raises(ServingUnavailableError, match="gone"):
                await store.read_payload(first.offset, 1024)
            assert (await store.read_payload(open_one.offset, 1024)).data == b"p1"
        async with stores.open() as store:  # a restart
            replayed = await store.replay()
            assert replayed.start == open_one.offset
            assert [r.request_id for _, r in replayed.records] == ["r1"]
            assert (await store.read_payload(open_one.offset, 1024)).data == b"p1"
            with pytest.raises(ServingUnavailableError, match="gone"):
                await store.read_payload(first.offset, 1024)

    run(body)


@asynccontextmanager
async def small_segments(directory: Path) -> AsyncIterator[tuple[Broker, BrokerRequestStore]]:
    settings = BrokerSettings(fsync=FsyncPolicy.INTERVAL, segment_bytes=64 * 1024)
    broker = Broker.open(directory, settings)
    hub = Hub(broker, quotas=Quotas({}), threads=2)
    await hub.start()
    try:
        yield broker, BrokerRequestStore(hub)
    finally:
        await hub.stop()
        broker.close()


def test_finished_requests_stop_holding_the_log(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    payload = bytes(2_000)

    async def body() -> None:
        async with small_segments(directory) as (broker, store):
            offsets = {}
            for i in range(200):  # ~400 KiB of submits: several segments
                rid = f"r{i}"
                offsets[rid] = (await store.append_submit(record(rid), payload)).offset
                if i < 150:  # the first 150 finish; 150..199 stay open
                    await store.write([done(rid)])
            broker.expire()
            held = broker.stats()
            assert held.log_segments >= 5
            assert held.log_start == 0  # the requests queue holds it all
            point = offsets["r150"]  # the restart point: the oldest unfinished
            await store.commit(point)
            assert broker.queue_info(_REQUESTS).min_offset == point
            report = broker.expire()
            freed = broker.stats()
            assert report.reclaimed_bytes > 0
            assert freed.log_segments < held.log_segments
            assert freed.log_start > 0
            assert await store.boot(1) == 1
        async with small_segments(directory) as (broker, store):
            assert await store.boot(1) == 2
            boots = broker.queue_info(QueueName("", BOOTS_TOPIC, BOOTS_LITE))
            assert (boots.min_offset, boots.next_offset) == (1, 2)  # only the last boot is kept
            replayed = await store.replay()
            assert replayed.start == point
            ids = [r.request_id for _, r in replayed.records]
            assert ids == [f"r{i}" for i in range(150, 200)]  # nothing finished comes back
            for i in (150, 199):  # nothing unfinished is lost
                assert (await store.read_payload(offsets[f"r{i}"], 1 << 20)).data == payload

    run(body)


def test_an_index_rebuilt_after_a_commit_keeps_the_trim(tmp_path: Path) -> None:
    directory = tmp_path / "store"

    async def body() -> None:
        async with small_segments(directory) as (_, store):
            for i in range(20):
                await store.append_submit(record(f"r{i}"), b"p")
                await store.write([done(f"r{i}")])
            last = await store.append_submit(record("open"), b"p")
            await store.commit(last.offset)
        shutil.rmtree(directory / "index")  # lost: rebuilt from the log on open
        async with small_segments(directory) as (broker, store):
            assert broker.queue_info(_REQUESTS).min_offset == last.offset
            replayed = await store.replay()
            assert [r.request_id for _, r in replayed.records] == ["open"]

    run(body)


def test_a_compacted_finished_journal_stops_holding_the_log(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    payload = bytes(2_000)

    async def body() -> None:
        async with small_segments(directory) as (broker, store):
            for i in range(200):  # ~400 KiB of submits: several segments
                rid = f"r{i}"
                await store.append_submit(record(rid), payload)
                await store.write([FinishedWrite(finished_view(rid)), done(rid)])
            await store.commit(broker.queue_info(_REQUESTS).next_offset)
            broker.expire()
            held = broker.stats()
            assert held.log_segments >= 5
            assert held.log_start == 0  # every request finished: the journal holds it all
            assert await store.compact_finished(150) == 150
            report = broker.expire()
            freed = broker.stats()
            assert report.reclaimed_bytes > 0
            assert freed.log_segments < held.log_segments
            assert freed.log_start > 0
        async with small_segments(directory) as (_, store):
            recalled = await store.recall_finished(1000)
            assert [v.request_id for v in recalled.views] == [f"r{i}" for i in range(50, 200)]
            assert recalled.views[-1] == finished_view("r199")
            assert recalled.entries == 0

    run(body)
