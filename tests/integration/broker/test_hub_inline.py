"""Where the hub runs a gathered publish: on the loop only when no disk wait is possible.

Under ``fsync: interval`` an append that fits in the active segment waits
for nothing, so the hub stores it on the event loop; an append that starts
a new segment (its rotation fsyncs the old one) and every append under
``always`` go to the thread pool. Either way subscribers are told of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker import Broker, BrokerSettings
from broker.hub import Hub
from broker.log.commitlog import FsyncPolicy
from broker.tenancy import Quotas
from broker.types import PublishRequest, QueueName

TENANT = "acme"


def _requests(count: int, size: int) -> list[PublishRequest]:
    return [PublishRequest("chat", b"x" * size, ("s-1",), {}, TENANT) for _ in range(count)]


async def _publish_and_watch(
    directory: Path, settings: BrokerSettings, batches: list[list[PublishRequest]]
) -> tuple[int, list[int], list[tuple[int, ...]]]:
    """Publish each batch in turn; returns inline runs, wake-ups seen, offsets stored."""
    broker = Broker.open(directory, settings)
    hub = Hub(broker, quotas=Quotas({}), threads=2)
    await hub.start()
    try:
        cid, event = hub.open_consumer(grouped=False)
        key = QueueName(TENANT, "chat", "s-1").key
        hub.engine.add(cid, key, cursor=0, end=0)
        hub.engine.grant(cid, 1000)
        woken: list[int] = []
        offsets: list[tuple[int, ...]] = []
        for batch in batches:
            event.clear()
            stored = await hub.publish(TENANT, batch)
            offsets += [s.offsets for s in stored]
            await asyncio.wait_for(event.wait(), 5.0)  # the engine heard of it
            woken.append(cid)
        hub.close_consumer(cid)
        return hub.inline_runs, woken, offsets
    finally:
        await hub.stop()
        broker.close()


def test_interval_appends_run_on_the_loop_and_still_wake_subscribers(tmp_path: Path) -> None:
    settings = BrokerSettings(fsync=FsyncPolicy.INTERVAL)
    inline, woken, offsets = asyncio.run(
        _publish_and_watch(tmp_path, settings, [_requests(3, 100), _requests(2, 100)])
    )
    assert inline == 2
    assert len(woken) == 2
    assert offsets == [(0,), (1,), (2,), (3,), (4,)]


def test_an_append_that_starts_a_segment_goes_to_the_pool(tmp_path: Path) -> None:
    settings = BrokerSettings(fsync=FsyncPolicy.INTERVAL, segment_bytes=256 * 1024)
    batches = [_requests(1, 150_000), _requests(1, 150_000), _requests(1, 100)]
    inline, woken, offsets = asyncio.run(_publish_and_watch(tmp_path, settings, batches))
    # 1st: an empty segment takes it inline; 2nd would overflow it: the pool
    # (it rotates); 3rd fits in the new segment: inline again.
    assert inline == 2
    assert len(woken) == 3
    assert offsets == [(0,), (1,), (2,)]


def test_always_appends_never_run_on_the_loop(tmp_path: Path) -> None:
    settings = BrokerSettings(fsync=FsyncPolicy.ALWAYS)
    inline, woken, offsets = asyncio.run(
        _publish_and_watch(tmp_path, settings, [_requests(2, 100)])
    )
    assert inline == 0
    assert len(woken) == 1
    assert offsets == [(0,), (1,)]
