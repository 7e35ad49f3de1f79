"""A limited tenant's lite-topic count stays exact through expiry, without recounts.

Each expiry pass reports the lite-topics it removed per namespace and the hub
takes them off the tenants' counts; a full recount (a registry scan) runs
only every ``recount_every`` passes, as a safety net. Real broker on
tmp_path, a hand-moved clock for the TTLs, the hub's own expiry timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from broker.errors import LimitExceeded
from broker.hub import Hub
from broker.tenancy import Quotas, TenantLimits
from broker.types import PublishRequest, QueueName
from tests.integration.broker.conftest import FakeClock, OpenBroker

LIMITED = "tiny"
FREE = "acme"


def _to(tenant: str, *lites: str) -> list[PublishRequest]:
    return [PublishRequest("chat", b"m", (lite,), {}, tenant) for lite in lites]


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll the hub's expiry timer (10 s at most)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def _hub(open_broker: OpenBroker, *, recount_every: int) -> Hub:
    broker = open_broker(default_ttl_s=10.0, expiry_granularity_s=1.0)
    quotas = Quotas({LIMITED: TenantLimits(max_lite_topics=3)})
    return Hub(
        broker, quotas=quotas, threads=2, expire_interval_s=0.02, recount_every=recount_every
    )


def test_a_tenant_at_its_limit_creates_again_after_expiry_without_a_recount(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    async def scenario() -> None:
        hub = _hub(open_broker, recount_every=1_000_000)
        await hub.start()
        try:
            quotas = hub.quotas
            await hub.publish(LIMITED, _to(LIMITED, "a"))
            await hub.publish(FREE, _to(FREE, *(f"f-{i}" for i in range(5))))
            clock.advance(5)
            await hub.publish(LIMITED, _to(LIMITED, "b", "c"))
            assert quotas.lite_topics(LIMITED) == 3
            with pytest.raises(LimitExceeded, match="max_lite_topics=3"):
                await hub.publish(LIMITED, _to(LIMITED, "d"))
            assert quotas.lite_topics(LIMITED) == 3  # a refused call reserves nothing

            clock.advance(6)  # "a" and the free tenant's topics are past their TTL
            await _until(lambda: quotas.lite_topics(LIMITED) == 2)
            assert not hub.broker.exists(QueueName(LIMITED, "chat", "a"))
            await hub.publish(LIMITED, _to(LIMITED, "d"))  # room for one again
            with pytest.raises(LimitExceeded):
                await hub.publish(LIMITED, _to(LIMITED, "e"))

            clock.advance(20)  # everything goes
            await _until(lambda: quotas.lite_topics(LIMITED) == 0)
            await hub.publish(LIMITED, _to(LIMITED, "x", "y", "z"))
            assert quotas.lite_topics(LIMITED) == 3
            assert quotas.lite_topics(LIMITED) == hub.broker.lite_topic_count(LIMITED)
            assert hub.recounts == 1  # the one at start: expiry never rescanned
            assert quotas.lite_topics(FREE) == 0  # unlimited tenants are not counted
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_the_periodic_recount_repairs_a_count_that_drifted(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    async def scenario() -> None:
        hub = _hub(open_broker, recount_every=3)
        await hub.start()
        try:
            await hub.publish(LIMITED, _to(LIMITED, "a"))
            hub.quotas.set_lite_topics(LIMITED, 3)  # as if a race had counted two twice
            with pytest.raises(LimitExceeded):
                await hub.publish(LIMITED, _to(LIMITED, "b"))
            await _until(lambda: hub.recounts >= 2)
            assert hub.quotas.lite_topics(LIMITED) == 1
            await hub.publish(LIMITED, _to(LIMITED, "b", "c"))
        finally:
            await hub.stop()

    asyncio.run(scenario())


def test_the_expiry_report_counts_removed_lite_topics_per_namespace(
    open_broker: OpenBroker, clock: FakeClock
) -> None:
    broker = open_broker(default_ttl_s=10.0)
    broker.publish_batch(_to(LIMITED, "a", "b") + _to(FREE, "c") + _to("", "d"))
    broker.publish("chat", b"parent", namespace=FREE)  # a parent queue never expires
    clock.advance(11)
    report = broker.expire()
    assert report.expired_queues == 4
    assert dict(report.expired_by_namespace) == {LIMITED: 2, FREE: 1, "": 1}
    assert dict(broker.expire().expired_by_namespace) == {}
