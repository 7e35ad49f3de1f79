"""In-memory stand-ins for the worker's I/O: a Lease stream and a scripted backend.

:class:`FakeLink` is a Lease stream held in memory: the test pushes orders
(or a break) into it and reads what the worker sent. :class:`ScriptedBackend`
is a real :class:`~workers.backends.base.Backend` (it runs each request as a
producer task through ``RequestStreams``, like the real ones) whose output is
a script and whose pace the test sets: a request emits its chunks and then
waits on a gate before it finishes, so a stop can land in the middle.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from scheduler.clock import VirtualClock
from tidegate.client import (
    Completion,
    Failed,
    LeaseFeedback,
    LeaseGrant,
    LeaseOpened,
    LeaseOrder,
    Stopped,
    WorkerHello,
    WorkerReport,
)
from tidegate.errors import Unavailable
from workers.backends.base import LENGTH, Chunk, GenerationEvent, GenerationRequest
from workers.backends.streams import Emit, Ending, RequestStreams
from workers.engine_metrics import EngineSignals


class _Break:
    pass


BREAK = _Break()


class FakeLink:
    """One Lease stream; ``reports`` holds what the worker sent, in order."""

    def __init__(self, hello: WorkerHello, credits: int, max_chunk_bytes: int = 1 << 20) -> None:
        self.hello = hello
        self.credits = credits
        self.opened = LeaseOpened(hello.worker_id, 10.0, 1, max_chunk_bytes)
        self.reports: list[WorkerReport] = []
        self._orders: asyncio.Queue[LeaseOrder | _Break | None] = asyncio.Queue()
        self._sent = asyncio.Event()
        self.closed = False

    def push(self, order: LeaseOrder | _Break | None) -> None:
        self._orders.put_nowait(order)

    async def send(self, report: WorkerReport) -> None:
        self.reports.append(report)
        self._sent.set()

    async def receive(self) -> LeaseOrder | None:
        item = await self._orders.get()
        if isinstance(item, _Break):
            raise Unavailable("Lease: the stream broke (test)")
        return item

    async def close(self) -> None:
        self.closed = True

    async def until(self, predicate: Callable[[FakeLink], bool]) -> None:
        """Wait until what was sent satisfies ``predicate`` (woken by each send)."""
        while not predicate(self):
            self._sent.clear()
            await asyncio.wait_for(self._sent.wait(), 5.0)

    # what was sent, flattened
    def chunks(self, request_id: str) -> list[tuple[int, bytes]]:
        return [
            (c.index, c.data) for r in self.reports for c in r.chunks if c.request_id == request_id
        ]

    @property
    def completions(self) -> list[Completion]:
        return [c for r in self.reports for c in r.completions]

    @property
    def stopped(self) -> list[Stopped]:
        return [s for r in self.reports for s in r.stopped]

    @property
    def failed(self) -> list[Failed]:
        return [f for r in self.reports for f in r.failed]

    @property
    def credits_back(self) -> int:
        return sum(r.credits for r in self.reports)

    @property
    def feedback(self) -> list[LeaseFeedback]:
        return [r.feedback for r in self.reports if r.feedback is not None]


@dataclass
class Connector:
    """Hands out FakeLinks; ``fail`` makes the next calls raise Unavailable; while
    ``hang`` is set to an event not set yet, calls wait for it (a server that takes
    the connection and does not answer; ``hung``: their hellos)."""

    links: list[FakeLink] = field(default_factory=list)
    fail: int = 0
    max_chunk_bytes: int = 1 << 20
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    hang: asyncio.Event | None = None
    hung: list[WorkerHello] = field(default_factory=list)

    async def __call__(self, hello: WorkerHello, *, credits: int) -> FakeLink:
        if self.fail:
            self.fail -= 1
            raise Unavailable("Lease: server unreachable (test)")
        if self.hang is not None and not self.hang.is_set():
            self.hung.append(hello)
            await self.hang.wait()
        link = FakeLink(hello, credits, self.max_chunk_bytes)
        self.links.append(link)
        self.opened.set()
        return link

    async def link(self, index: int) -> FakeLink:
        while len(self.links) <= index:
            self.opened.clear()
            await asyncio.wait_for(self.opened.wait(), 5.0)
        return self.links[index]


class ScriptedBackend:
    """Each request emits ``words`` chunks ("w0 ", "w1 ", ...), one token each, then
    waits on ``gate`` before finishing (a preset gate finishes at once; ``hold``: the
    gate starts cleared, so the runs go on until the test sets it)."""

    def __init__(
        self,
        words: int = 3,
        *,
        hold: bool = False,
        signals: EngineSignals | None = None,
        fail_with: BaseException | None = None,
    ) -> None:
        self.words = words
        self.gate = asyncio.Event()
        if not hold:
            self.gate.set()
        self._signals = signals or EngineSignals()
        self.fail_with = fail_with
        self.requests: list[GenerationRequest] = []
        self.cancelled: list[str] = []
        self.emitted: dict[str, int] = {}
        self._streams = RequestStreams("scripted")

    @property
    def name(self) -> str:
        return "scripted"

    async def start(self) -> None:
        pass

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.requests.append(request)

        async def produce(emit: Emit) -> Ending:
            if self.fail_with is not None:
                raise self.fail_with
            try:
                for i in range(min(self.words, request.remaining_tokens)):
                    emit(Chunk(f"w{request.resume_tokens + i} ", 1))
                    self.emitted[request.request_id] = i + 1
                    await asyncio.sleep(0)
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.append(request.request_id)
                raise
            return Ending(LENGTH, input_tokens=7)

        return self._streams.stream(request, produce)

    async def cancel(self, request_id: str) -> bool:
        return await self._streams.cancel(request_id)

    async def signals(self) -> EngineSignals:
        return self._signals

    async def aclose(self) -> None:
        await self._streams.cancel_all()


def grant(
    request_id: str = "r1",
    lease_id: int = 1,
    *,
    next_chunk: int = 0,
    done_output_tokens: int = 0,
    resume_output: bytes = b"",
    output_tokens: int = 10,
    payload: bytes = b"prompt",
    properties: dict[str, str] | None = None,
) -> LeaseGrant:
    return LeaseGrant(
        request_id=request_id,
        lease_id=lease_id,
        tenant="acme",
        priority=0,
        payload=payload,
        input_tokens=7,
        output_tokens=output_tokens,
        properties=properties or {},
        next_chunk=next_chunk,
        done_output_tokens=done_output_tokens,
        resume_output=resume_output,
        deadline_s=0.0,
        attempt=1 if not next_chunk else 2,
        reply_topic="chatbot",
        reply_lite_topic=f"req-{request_id}",
    )


async def first_link_running(connector: Connector) -> FakeLink:
    """The worker's first stream, once r1 (lease 1) was granted on it and its first
    chunk went out."""
    link = await connector.link(0)
    link.push(grant("r1", 1))
    await link.until(lambda ln: bool(ln.chunks("r1")))
    return link


async def reconnected(connector: Connector, clock: VirtualClock, links: int) -> FakeLink:
    """Run the backoff's virtual sleeps until the worker opened ``links`` streams; the
    ``links``-th of them."""
    while len(connector.links) < links:
        for _ in range(20):  # jump only once the worker waits (not mid-connect)
            await asyncio.sleep(0)
        deadline = clock.next_deadline()
        if deadline is not None and deadline - clock.now() < 1.0:  # not the feedback timer
            clock.jump(deadline)
    return connector.links[links - 1]


async def jump_until(done: Callable[[], bool], clock: VirtualClock) -> float:
    """Jump the virtual clock from deadline to deadline until ``done()``; the time then."""
    for _ in range(1_000):
        for _ in range(20):  # everything that can run at this time runs
            await asyncio.sleep(0)
        if done():
            return clock.now()
        deadline = clock.next_deadline()
        if deadline is not None:
            clock.jump(deadline)
    raise AssertionError(f"not done by {clock.now()}")
