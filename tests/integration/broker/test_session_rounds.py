"""What one pull round of a Subscribe session asks of the broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from broker import Broker, BrokerSettings, PublishRequest, QueueName
from broker.hub import Hub
from broker.log.commitlog import FsyncPolicy
from broker.session import Change, Session, Start, StartKind
from broker.tenancy import Quotas

TENANT = "acme"


def test_a_round_never_asks_for_more_than_the_broker_reads_at_once(tmp_path: Path) -> None:
    """max_read_messages below a frame: the group's lease is cut to it, not refused."""

    async def main() -> None:
        settings = BrokerSettings(fsync=FsyncPolicy.INTERVAL, max_read_messages=50)
        broker = Broker.open(tmp_path, settings)
        hub = Hub(broker, quotas=Quotas({}), threads=2)
        await hub.start()
        try:
            queue = QueueName(TENANT, "jobs", "q")
            body = [PublishRequest("jobs", b"x", ("q",), {}, TENANT)] * 120
            broker.publish_batch(body)
            session = Session(hub, TENANT, group="g", lease_s=30.0, max_batch=1000)
            await session.apply(Change(add=((queue, Start(StartKind.EARLIEST)),), credits=1000))
            batch = await session.pull()
            assert [m.offset for m in batch.messages] == list(range(50))
            await session.close()
        finally:
            await hub.stop()
            broker.close()

    asyncio.run(main())
