"""A runtime on a virtual clock and an in-memory store, and a fake worker to drive it."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from scheduler.clock import VirtualClock
from scheduler.policy import create_policy
from scheduler.runtime import (
    ChunkIn,
    CompletionIn,
    GrantOut,
    MemoryRequestStore,
    Outgoing,
    RejectOut,
    Runtime,
    RuntimeOptions,
    SettledOut,
    StopOut,
    StoppedIn,
    SubmitSpec,
    Submitted,
    WorkerHello,
    WorkerInput,
    WorkerSession,
)
from scheduler.runtime.memory_store import StoredMessage
from scheduler.runtime.records import parse_reply
from scheduler.types import RateLimit, SchedulerConfig, TenantConfig, WindowConfig

T = TypeVar("T")

FLEET = "fleet"
WALL_OFFSET = 1.7e9


def tenants_config(
    *,
    window: int | None = None,
    rate: RateLimit | None = None,
    max_queued: int = 10_000,
    extra: tuple[TenantConfig, ...] = (),
) -> SchedulerConfig:
    tenants = [
        TenantConfig("acme", weight=1.0, max_priority=2, max_queued=max_queued, rate=rate),
        TenantConfig("beta", weight=1.0, max_priority=0),
        *extra,
    ]
    win = WindowConfig() if window is None else WindowConfig(window, window, window)
    return SchedulerConfig(tenants=MappingProxyType({t.name: t for t in tenants}), window=win)


def make_runtime(
    store: MemoryRequestStore | None = None,
    *,
    config: SchedulerConfig | None = None,
    clock: VirtualClock | None = None,
    options: RuntimeOptions | None = None,
) -> tuple[Runtime, MemoryRequestStore, VirtualClock]:
    store = store if store is not None else MemoryRequestStore()
    clock = clock if clock is not None else VirtualClock(100.0)
    config = config if config is not None else tenants_config()
    runtime = Runtime(
        create_policy("tidegate", config, random.Random(7)),
        store,
        config,
        clock=clock,
        wall=lambda: clock.now() + WALL_OFFSET,
        options=options or RuntimeOptions(lease_s=5.0, commit_interval_s=1.0),
        worker_tenants=frozenset({FLEET}),
    )
    return runtime, store, clock


async def settle(rounds: int = 30) -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def advance(clock: VirtualClock, seconds: float, step: float = 0.05) -> None:
    """Move the virtual clock in ticks, letting the runtime react at each."""
    steps = round(seconds / step)
    for _ in range(steps):
        clock.advance(step)
        await settle(5)
    await settle()


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(test())


async def within(awaitable: Awaitable[T]) -> T:
    """Await something that must happen without any time passing (a safety net, not a sleep)."""
    async with asyncio.timeout(2.0):
        return await awaitable


@dataclass
class FakeWorker:
    """Drives one Lease stream the way a worker process would.

    A reader task takes everything the stream sends into ``inbox`` as it is
    sent; :meth:`drain` returns what arrived since the last look.
    """

    runtime: Runtime
    worker_id: str
    session: WorkerSession = field(init=False)
    inbox: list[Outgoing] = field(default_factory=list)
    ended: BaseException | None = None
    _seen: int = 0
    _reader: asyncio.Task[None] | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.session = self.runtime.attach(FLEET, WorkerHello(self.worker_id, capacity=8))
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while (item := await self.runtime.outgoing(self.session)) is not None:
                self.inbox.append(item)
                self._arrived.set()
        except Exception as exc:
            self.ended = exc
        self._arrived.set()

    def send(self, message: WorkerInput) -> None:
        self.runtime.receive(self.session, message)

    def credit(self, count: int = 1) -> None:
        self.send(WorkerInput(credits=count))

    async def drain(self) -> list[Outgoing]:
        """What the stream sent since the last look (after letting it run)."""
        await settle()
        new = self.inbox[self._seen :]
        self._seen = len(self.inbox)
        return new

    async def next(self) -> Outgoing:
        async def wait() -> Outgoing:
            while self._seen >= len(self.inbox):
                assert self.ended is None
                assert self._reader is not None
                assert not self._reader.done(), "the stream ended"
                self._arrived.clear()
                await self._arrived.wait()
            self._seen += 1
            return self.inbox[self._seen - 1]

        return await within(wait())

    async def grant(self) -> GrantOut:
        """The next grant (settlements before it are skipped; they stay in the inbox)."""
        item = await self.next()
        while isinstance(item, SettledOut):
            item = await self.next()
        assert isinstance(item, GrantOut), item
        return item

    def close(self) -> None:
        """The stream breaks (the worker died)."""
        self.runtime.detach(self.session)

    def chunks(self, grant: GrantOut, *data: bytes, start: int | None = None) -> None:
        first = grant.next_chunk if start is None else start
        self.send(
            WorkerInput(
                chunks=tuple(
                    ChunkIn(grant.request_id, grant.lease_id, first + i, body)
                    for i, body in enumerate(data)
                )
            )
        )

    def complete(self, grant: GrantOut, output_tokens: int = 3, credits: int = 1) -> None:
        self.send(
            WorkerInput(
                credits=credits,
                completions=(
                    CompletionIn(grant.request_id, grant.lease_id, 5, output_tokens, "stop"),
                ),
            )
        )

    def stopped(self, grant: GrantOut, done: int, credits: int = 1) -> None:
        self.send(
            WorkerInput(
                credits=credits, stopped=(StoppedIn(grant.request_id, grant.lease_id, done),)
            )
        )

    def rejections(self) -> list[RejectOut]:
        return [item for item in self.inbox if isinstance(item, RejectOut)]

    def stops(self) -> list[StopOut]:
        return [item for item in self.inbox if isinstance(item, StopOut)]

    def settled(self) -> list[SettledOut]:
        return [item for item in self.inbox if isinstance(item, SettledOut)]


async def one_granted(runtime: Runtime) -> tuple[Submitted, FakeWorker, GrantOut]:
    """One acme request (session "s", payload b"p") granted to worker w1 holding one credit."""
    submitted = await runtime.submit("acme", SubmitSpec(session="s"), b"p")
    worker = FakeWorker(runtime, "w1")
    worker.credit(1)
    return submitted, worker, await worker.grant()


def reply(store: MemoryRequestStore, tenant: str, topic: str, lite: str) -> list[StoredMessage]:
    return store.data.replies(tenant, topic, lite)


def stream_of(messages: list[StoredMessage], request_id: str) -> tuple[list[bytes], str | None]:
    """The request's chunk bodies in stored order (asserting indexes 0, 1, ... with no
    duplicate) and its end outcome (None: not ended)."""
    bodies: list[bytes] = []
    outcome = None
    for message in messages:
        mark = parse_reply(message.properties)
        if mark is None or mark.request_id != request_id:
            continue
        assert outcome is None, "a message after the end mark"
        assert mark.index == len(bodies), f"chunk {mark.index} where {len(bodies)} was due"
        if mark.event == "end":
            outcome = mark.outcome
        else:
            bodies.append(message.body)
    return bodies, outcome


def spec(**kwargs: Any) -> SubmitSpec:
    return SubmitSpec(**kwargs)
