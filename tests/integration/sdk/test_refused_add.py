"""An add a tenant limit refuses raises ResourceExhausted from ``add`` and the
subscription keeps delivering (sync and asyncio SDK, real server).

The ``tiny`` tenant holds at most 2 subscriptions and 3 live lite-topics.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import tidegate
from tests.integration.sdk.conftest import KEYS, RETRY, Server, make_client
from tidegate import AsyncClient, Message, Notice, QueueRef, Start

pytestmark = pytest.mark.integration


def bodies(messages: list[Message | None]) -> list[bytes]:
    return sorted(m.body for m in messages if m is not None)


def test_sync_add_over_the_limit_raises_and_the_subscription_goes_on(server: Server) -> None:
    with make_client(server, tenant="tiny") as client:
        sub = client.subscribe("chat", ["a", "b"], start=Start.latest())
        with sub:
            with pytest.raises(tidegate.ResourceExhausted, match="max_subscriptions=2") as info:
                sub.add("chat", ["c"])
            assert info.value.code == "RESOURCE_EXHAUSTED"
            assert sub.subscriptions == (QueueRef("chat", "a"), QueueRef("chat", "b"))
            client.publish("chat", b"a-1", lite="a")
            client.publish("chat", b"b-1", lite="b")
            client.publish("chat", b"c-1", lite="c")  # not held: never delivered
            assert bodies([sub.get(timeout=10), sub.get(timeout=10)]) == [b"a-1", b"b-1"]
            assert sub.reconnects == 0  # the same stream
            # The refused add counted nothing: one out, one in fits.
            assert client.status().subscriptions == 2
            sub.remove("chat", ["b"])
            sub.add("chat", ["c"], start=Start.earliest())
            assert bodies([sub.get(timeout=10)]) == [b"c-1"]
            client.publish("chat", b"a-2", lite="a")
            assert bodies([sub.get(timeout=10)]) == [b"a-2"]
            assert sub.get(timeout=0.2) is None
            assert client.status().subscriptions == 2


def test_sync_add_without_wait_tells_the_notice_handler(server: Server) -> None:
    told: list[Notice] = []
    seen = threading.Event()

    def on_notice(notice: Notice) -> None:
        told.append(notice)
        seen.set()

    with (
        make_client(server, tenant="tiny") as client,
        client.subscribe("chat", ["a"], start=Start.latest(), on_notice=on_notice) as sub,
    ):
        sub.add("chat", ["b", "c"], wait=False)
        assert seen.wait(10)
        (notice,) = told
        assert notice.code == "RESOURCE_EXHAUSTED"
        assert "max_subscriptions=2" in notice.message
        client.publish("chat", b"a-1", lite="a")
        message = sub.get(timeout=10)
        assert message is not None
        assert message.body == b"a-1"
        assert sub.subscriptions == (QueueRef("chat", "a"),)


def test_async_add_over_the_limit_raises_and_the_subscription_goes_on(server: Server) -> None:
    async def main() -> None:
        client = AsyncClient(server.address, api_key=KEYS["tiny"], retry=RETRY)
        async with client:
            sub = await client.subscribe("chat", ["a", "b"], start=Start.latest())
            async with sub:
                with pytest.raises(tidegate.ResourceExhausted, match="max_subscriptions=2"):
                    await sub.add("chat", ["c", "d"])
                assert sub.subscriptions == (QueueRef("chat", "a"), QueueRef("chat", "b"))
                await client.publish("chat", b"a-1", lite="a")
                await client.publish("chat", b"b-1", lite="b")
                got = [await sub.get(timeout=10), await sub.get(timeout=10)]
                assert bodies(got) == [b"a-1", b"b-1"]
                assert sub.reconnects == 0
                assert (await client.status()).subscriptions == 2
                await sub.remove("chat", ["a"])
                await sub.add("chat", ["c"])
                await client.publish("chat", b"c-1", lite="c")
                await client.publish("chat", b"b-2", lite="b")
                got = [await sub.get(timeout=10), await sub.get(timeout=10)]
                assert bodies(got) == [b"b-2", b"c-1"]
                assert (await client.status()).subscriptions == 2

    asyncio.run(main())
