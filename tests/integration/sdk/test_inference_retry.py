"""InferenceClient against a real server: Submit retried after a lost answer runs once
(one idempotency key per call), and closing a client cuts a retry's backoff short."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc import aio

import tidegate
from tests.integration.inference.harness import KEYS, RawWorker, Server
from tidegate import AsyncClient, Retry
from tidegate.connect import Connection
from tidegate.inference import InferenceClient
from tidegate.inference_values import SubmitOptions

pytestmark = pytest.mark.integration

if TYPE_CHECKING:
    _Interceptor = aio.UnaryUnaryClientInterceptor[Any, Any]
else:  # not subscriptable at run time
    _Interceptor = aio.UnaryUnaryClientInterceptor

FAST = Retry(initial_s=0.05, max_s=0.5, give_up_s=20.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    made = Server(tmp_path).start()
    yield made
    made.kill()


class LoseSubmitAnswers(_Interceptor):
    """Lets the first ``count`` Submits reach the server and be answered, then
    drops the answer: the client sees UNAVAILABLE, as when a connection breaks
    after the server did its part."""

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.keys: list[str] = []  # the idempotency key of every Submit sent

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        if not name.endswith("/Submit"):
            return call
        self.keys.append(request.idempotency_key)
        if len(self.keys) > self.count:
            return call
        await call  # answered: admitted and on disk
        raise aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE,
            aio.Metadata(),
            aio.Metadata(),
            "the answer was lost on the way (test)",
            "",
        )


@pytest.fixture
def lossy(monkeypatch: pytest.MonkeyPatch) -> LoseSubmitAnswers:
    lose = LoseSubmitAnswers(count=2)

    def channel(self: Connection) -> aio.Channel:
        interceptors: Any = [lose]
        return aio.insecure_channel(self.server, options=self.options(), interceptors=interceptors)

    monkeypatch.setattr(Connection, "aio_channel", channel)
    return lose


def test_submit_retried_after_lost_answers_runs_once(
    server: Server, lossy: LoseSubmitAnswers
) -> None:
    async def main() -> tuple[str, str]:
        async with InferenceClient(server.address, api_key=KEYS["acme"], retry=FAST) as client:
            made = await client.submit(b"once")
            assert made.duplicate  # the third try got the first one's answer
            assert client.retries == 2
            lossy.count = 3 + 2
            given = await client.submit(b"twice", SubmitOptions(idempotency_key="user-key-1"))
            assert given.duplicate
            assert given.request_id != made.request_id
            status = await client.status(made.request_id)
            assert status.request_id == made.request_id
            return made.request_id, given.request_id

    made, given = asyncio.run(main())
    generated = lossy.keys[0]
    assert generated.startswith("sdk-")
    assert lossy.keys == [generated] * 3 + ["user-key-1"] * 3
    worker = RawWorker(server, "w1", credits=4)
    grants = [worker.grant()[0].request_id, worker.grant()[0].request_id]
    assert sorted(grants) == sorted([made, given])
    with pytest.raises(queue.Empty):
        worker.expect("grants", timeout=0.5)
    worker.close()


def test_each_submit_call_has_a_key_of_its_own(server: Server, lossy: LoseSubmitAnswers) -> None:
    lossy.count = 0

    async def main() -> None:
        async with InferenceClient(server.address, api_key=KEYS["acme"], retry=FAST) as client:
            one = await client.submit(b"a")
            two = await client.submit(b"a")
            assert one.request_id != two.request_id
            assert not one.duplicate
            assert not two.duplicate

    asyncio.run(main())
    assert len(set(lossy.keys)) == 2


def test_a_key_breaking_the_rule_is_refused_before_sending() -> None:
    with pytest.raises(tidegate.InvalidArgument, match=r"idempotency_key 'a b' .* 1 to 128"):
        SubmitOptions(idempotency_key="a b")


SLOW = Retry(initial_s=30.0, max_s=30.0, jitter=0.0, give_up_s=None)


@pytest.mark.parametrize("kind", ["inference", "broker"])
def test_closing_the_client_during_a_backoff_ends_the_call_at_once(
    server: Server, kind: str
) -> None:
    async def main() -> None:
        client: InferenceClient | AsyncClient
        if kind == "inference":
            inference = InferenceClient(server.address, api_key=KEYS["acme"], retry=SLOW)
            made = await inference.submit(b"p")
            client = inference

            async def call() -> object:
                return await inference.status(made.request_id)
        else:
            broker = AsyncClient(server.address, api_key=KEYS["acme"], retry=SLOW)
            await broker.status()
            client = broker

            async def call() -> object:
                return await broker.status()

        server.stop()  # UNAVAILABLE from now on: the call waits 30 s to retry
        task = asyncio.create_task(call())
        async with asyncio.timeout(20):
            while client.retries < 1:
                assert not task.done(), task
                await asyncio.sleep(0.01)
        started = time.monotonic()
        await client.close()
        with pytest.raises(tidegate.ClientClosed):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 1.0
        with pytest.raises(tidegate.ClientClosed):
            await call()

    asyncio.run(main())
