"""Acks under ``fsync: always``: a Subscribe stream's acks are not synced one by
one; the hub syncs the index shortly after, one sync shared by the acks before it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from broker import Broker, BrokerSettings
from broker.hub import Hub
from broker.index.store import IndexStore, WriteOps
from broker.log.commitlog import FsyncPolicy
from broker.tenancy import Quotas
from broker.types import PublishRequest

Q = "jobs/q"


class _Spy:
    """The broker's index, with its synced writes and syncs counted."""

    def __init__(self, inner: IndexStore) -> None:
        self.inner = inner
        self.synced_writes = 0
        self.plain_writes = 0
        self.syncs = 0
        self.release = threading.Event()
        self.release.set()

    def write(self, batch: WriteOps, *, sync: bool = False) -> None:
        if sync:
            self.synced_writes += 1
        else:
            self.plain_writes += 1
        self.inner.write(batch, sync=sync)

    def sync(self) -> None:
        self.release.wait(5)
        self.syncs += 1
        self.inner.sync()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _broker(path: Path) -> tuple[Broker, _Spy]:
    broker = Broker.open(path, BrokerSettings(fsync=FsyncPolicy.ALWAYS))
    spy = _Spy(broker._index)  # the groups reach the index through the broker
    broker._index = spy  # type: ignore[assignment]
    broker.publish_batch([PublishRequest("jobs", b"m%d" % i, ("q",)) for i in range(6)])
    return broker, spy


def test_an_ack_without_sync_is_written_plain_and_sync_index_makes_it_durable(
    tmp_path: Path,
) -> None:
    broker, spy = _broker(tmp_path)
    try:
        broker.lease("g", Q, 6, 30.0)
        before, plain = spy.synced_writes, spy.plain_writes
        broker.ack("g", Q, [0, 1, 2], sync=False)
        assert (spy.synced_writes, spy.plain_writes) == (before, plain + 1)
        broker.ack("g", Q, [3], sync=True)  # the default: synced, as before
        assert spy.synced_writes == before + 1
        broker.sync_index()
        assert spy.syncs == 1
    finally:
        broker.close()
    with Broker.open(tmp_path, BrokerSettings(fsync=FsyncPolicy.ALWAYS)) as again:
        assert again.committed_offset("g", Q) == 4


def test_the_hub_shares_one_sync_among_the_acks_made_before_it(tmp_path: Path) -> None:
    broker, spy = _broker(tmp_path)

    async def run() -> None:
        hub = Hub(broker, quotas=Quotas({}), threads=2)
        await hub.start()
        try:
            spy.release.clear()  # the first sync hangs until released
            hub.sync_soon()
            await asyncio.sleep(0.05)  # it is under way
            for _ in range(5):
                hub.sync_soon()  # changes made meanwhile: one more sync for all of them
            spy.release.set()
            await asyncio.sleep(0.3)
            assert spy.syncs == 2
            hub.sync_soon()
        finally:
            await hub.stop()  # waits for the sync under way
        assert spy.syncs == 3

    try:
        asyncio.run(run())
    finally:
        broker.close()


@pytest.mark.parametrize("policy", [FsyncPolicy.ALWAYS, FsyncPolicy.INTERVAL])
def test_sync_index_on_a_closed_broker_refuses(tmp_path: Path, policy: FsyncPolicy) -> None:
    broker = Broker.open(tmp_path, BrokerSettings(fsync=policy))
    broker.close()
    with pytest.raises(Exception, match="closed"):
        broker.sync_index()


def test_a_failed_sync_fails_the_broker_and_the_hub_stops_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, spy = _broker(tmp_path)

    def broken() -> None:
        raise OSError(5, "Input/output error")

    spy.sync = broken  # type: ignore[method-assign]

    async def run() -> None:
        hub = Hub(broker, quotas=Quotas({}), threads=2)
        await hub.start()
        try:
            hub.sync_soon()
            await asyncio.sleep(0.2)
        finally:
            await hub.stop()

    try:
        asyncio.run(run())
        assert "syncing the index after acks failed" in caplog.text
        with pytest.raises(Exception, match="an earlier write failed"):
            broker.lease("g", Q, 1, 30.0)
    finally:
        broker.close()
