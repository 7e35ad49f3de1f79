"""A Subscribe add that fails after part of it is in place is not answered as
refused (the client would undo what the server still delivers): the session
gives back what it does not hold and the stream ends; closing it leaves no
subscription counted, in the tenant's quota or on the queues."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from broker import Broker, BrokerSettings, QueueName
from broker.errors import FailedPrecondition
from broker.hub import Hub
from broker.log.commitlog import FsyncPolicy
from broker.session import Change, Session, Start, StartKind
from broker.tenancy import Quotas, TenantLimits

TENANT = "acme"
EARLIEST = Start(StartKind.EARLIEST)


def test_a_failure_after_placing_part_of_an_add_ends_the_stream_and_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        broker = Broker.open(tmp_path, BrokerSettings(fsync=FsyncPolicy.INTERVAL))
        quotas = Quotas({TENANT: TenantLimits(max_subscriptions=10)})
        hub = Hub(broker, quotas=quotas, threads=2)
        await hub.start()
        try:
            a, b, c = (QueueName(TENANT, "chat", n) for n in ("a", "b", "c"))
            session = Session(hub, TENANT, group="", lease_s=30.0, max_batch=10)
            await session.apply(Change(add=((a, EARLIEST),)))
            assert quotas.subscriptions(TENANT) == 1
            real = broker.unsubscribe
            failures = [FailedPrecondition("a passing failure")]

            def once(queue: QueueName | str) -> None:
                if failures:
                    raise failures.pop()
                real(queue)

            # Re-adding `a` (held) makes the session drop the extra count: that
            # call fails, after `a` is in place and before `b` and `c` are.
            monkeypatch.setattr(broker, "unsubscribe", once)
            with pytest.raises(RuntimeError, match="placed only in part"):
                await session.apply(Change(add=((a, EARLIEST), (b, EARLIEST), (c, EARLIEST))))
            assert not [item for item in session.outbox() if getattr(item, "refused", None)]
            await session.close()
            assert quotas.subscriptions(TENANT) == 0
            # `b` and `c` were given back, `a` released by the close; only the
            # extra count whose removal failed is left on `a`.
            for queue in (b, c):
                with pytest.raises(FailedPrecondition, match="no subscriber"):
                    broker.unsubscribe(queue)
            broker.unsubscribe(a)
            with pytest.raises(FailedPrecondition, match="no subscriber"):
                broker.unsubscribe(a)
        finally:
            await hub.stop()
            broker.close()

    asyncio.run(main())
