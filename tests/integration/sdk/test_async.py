"""The asyncio SDK against a real server: the same contract as the sync one."""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import pytest

import tidegate
from tests.integration.sdk.conftest import KEYS, RETRY, Server
from tidegate import AsyncClient, Outgoing, QueueRef, Start

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def client_of(server: Server, tenant: str = "acme") -> AsyncClient:
    return AsyncClient(server.address, api_key=KEYS[tenant], retry=RETRY)


def test_round_trip_across_lite_topics_with_changes_on_the_fly(server: Server) -> None:
    async def main() -> None:
        async with client_of(server) as client:
            lites = [f"s-{i}" for i in range(20)]
            await client.publish_batch([Outgoing("chat", f"{x}:0".encode(), (x,)) for x in lites])
            sub = await client.subscribe("chat", lites, start=Start.earliest(), buffer=16)
            async with sub:
                await client.publish_batch(
                    [Outgoing("chat", f"{x}:1".encode(), (x,)) for x in lites]
                )
                seen: dict[str, list[int]] = defaultdict(list)
                for _ in range(40):
                    message = await sub.get(timeout=10)
                    assert message is not None
                    assert message.body == f"{message.lite_topic}:{message.offset}".encode()
                    seen[message.lite_topic].append(message.offset)
                assert dict(seen) == {x: [0, 1] for x in lites}
                await sub.add("chat", ["extra"], start=Start.latest())
                await sub.remove("chat", lites)
                assert sub.subscriptions == (QueueRef("chat", "extra"),)
                await client.publish("chat", b"gone", lite="s-0")
                await client.publish("chat", b"here", lite="extra")
                message = await sub.get(timeout=10)
                assert message is not None
                assert message.body == b"here"
                assert await sub.get(timeout=0.2) is None

    asyncio.run(main())


def test_iteration_group_acks_and_request_reply(server: Server) -> None:
    async def responder(client: AsyncClient, ready: asyncio.Event) -> None:
        sub = await client.subscribe("agent", ["inbox"], start=Start.earliest())
        ready.set()
        async with sub:
            async for request in sub:
                await client.reply(request, b"re: " + request.body)

    async def main() -> None:
        async with client_of(server) as client, client_of(server) as agent:
            ready = asyncio.Event()
            task = asyncio.create_task(responder(agent, ready))
            await ready.wait()
            answer = await client.request("agent", b"hello", lite="inbox", timeout_s=20)
            assert (answer.body, answer.topic) == (b"re: hello", "a2a")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

            await client.publish("jobs", b"job", lite="q")
            sub = await client.subscribe("jobs", ["q"], group="g")
            async with sub:
                job = await sub.get(timeout=10)
                assert job is not None
                assert job.attempt == 1
                sub.ack(job)
            info = await client.queue_info("jobs", "q", group="g")
            assert info.committed_offset == 1

    asyncio.run(main())


def test_a_chunked_body_from_an_async_generator(server: Server) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(12):
            yield bytes([i]) * MiB

    expected = hashlib.sha256(b"".join(bytes([i]) * MiB for i in range(12))).hexdigest()

    async def main() -> None:
        async with client_of(server) as client:
            result = await client.publish("big", chunks(), lite="b")
            assert (result.offset, result.size) == (0, 12 * MiB)
            sub = await client.subscribe("big", ["b"], start=Start.earliest(), buffer=1)
            async with sub:
                message = await sub.get(timeout=30)
            assert message is not None
            assert message.chunked
            assert hashlib.sha256(message.body).hexdigest() == expected
            digest = hashlib.sha256()
            async for piece in client.read_body("big", "b", 0):
                digest.update(piece)
            assert digest.hexdigest() == expected

    asyncio.run(main())


def test_errors_are_the_sdk_classes(server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(server.address, api_key="wrong-key", retry=RETRY) as client:
            with pytest.raises(tidegate.Unauthenticated):
                await client.status()
            with pytest.raises(tidegate.Unauthenticated):
                await client.subscribe("t", ["x"])
        async with client_of(server, "tiny") as client:
            with pytest.raises(tidegate.ResourceExhausted, match="max_subscriptions"):
                await client.subscribe("t", ["a", "b", "c"])
            with pytest.raises(tidegate.InvalidArgument, match=r"tidegate\.x"):
                await client.publish("t", b"x", properties={"tidegate.x": "1"})
            with pytest.raises(tidegate.NotFound):
                async for _ in client.read_body("t", "nothing", 3):
                    pass

    asyncio.run(main())


@pytest.mark.slow
@pytest.mark.crash
def test_resume_across_a_restart(server_factory: Callable[..., Server]) -> None:
    server = server_factory()
    rounds, lites = 30, [f"l-{i}" for i in range(5)]

    async def publish(client: AsyncClient) -> None:
        for r in range(rounds):
            await client.publish_batch([Outgoing("res", f"{x}:{r}".encode(), (x,)) for x in lites])
            await asyncio.sleep(0.02)

    async def main() -> None:
        async with client_of(server) as producer, client_of(server) as consumer:
            sub = await consumer.subscribe("res", lites, start=Start.earliest(), buffer=20)
            task = asyncio.create_task(publish(producer))
            seen: dict[str, list[bytes]] = defaultdict(list)
            for count in range(rounds * len(lites)):
                message = await sub.get(timeout=30)
                assert message is not None
                seen[message.lite_topic].append(message.body)
                if count == rounds * len(lites) // 3:
                    # The stop blocks this loop briefly; the streams see the server go.
                    await asyncio.to_thread(server.stop, signal.SIGTERM)
                    await asyncio.to_thread(server.start)
            await task
            assert await sub.get(timeout=0.3) is None
            assert sub.reconnects >= 1
            await sub.close()
            assert dict(seen) == {x: [f"{x}:{r}".encode() for r in range(rounds)] for x in lites}

    asyncio.run(main())
