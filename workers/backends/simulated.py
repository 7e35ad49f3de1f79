"""A simulated GPU: the simulator's fleet model, run in real (or virtual) time.

For demos and load tests on machines without a GPU. The timing is the
simulator's own :class:`scheduler.sim.fleet.Worker` — continuous batching,
chunked prefill, a decode step that grows with the batch, a KV-cache
capacity — so a fleet of simulated workers behaves like the simulated fleet
the policy was tuned on, and its engine signals (queue depth, KV use) and
GPU utilisation come from the same model.

A driver task walks the model forward on a :class:`~scheduler.clock.Clock`:
it sleeps until the model's next event (a first token, a finish) or the next
chunk tick, whichever is sooner, and wakes early when a request arrives.
The model jumps over runs of identical decode steps, so between a first
token and a finish the tokens of each sequence are paced at the current
step rate (one token per ``decode_step_s + decode_step_per_seq_s * batch``),
never reaching the last token before the model says the sequence finished.
First tokens and finishes are exact; the pacing in between is what a real
engine streams, to within one tick.

On a :class:`~scheduler.clock.VirtualClock` the whole thing runs without
sleeping, which is how its tests run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from scheduler.clock import Clock
from scheduler.sim.fleet import FleetModel, SeqEvent, Worker
from workers.backends.base import LENGTH, Chunk, GenerationEvent, GenerationRequest
from workers.backends.streams import Emit, Ending, RequestStreams
from workers.engine_metrics import EngineSignals
from workers.errors import WorkerConfigError
from workers.probe import GpuReading

__all__ = ["SimulatedBackend", "SimulatedConfig", "SimulatedGpuProbe"]

_WORD_TEXT = (
    "tide gate harbour lantern river stone north evening quiet signal anchor "
    "current bright channel drift shore beacon morning window steady"
)
_WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True, slots=True)
class SimulatedConfig:
    """One simulated worker.

    ``chunk_interval_s``: at most this long between chunks of a running
    sequence (default: one decode step). ``chars_per_token``: how a text
    prompt is counted when the request carries no token estimate.
    ``memory_used``: the GPU memory fraction reported, constant because
    engines such as vLLM reserve their KV cache up front.
    """

    model: FleetModel = field(default_factory=FleetModel)
    worker_id: str = "sim-0"
    chunk_interval_s: float | None = None
    chars_per_token: float = 4.0
    memory_used: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.chunk_interval_s is not None and not self.chunk_interval_s > 0:
            raise WorkerConfigError(
                f"simulated.chunk_interval_s must be > 0 (got {self.chunk_interval_s!r})"
            )
        if not self.chars_per_token > 0:
            raise WorkerConfigError(
                f"simulated.chars_per_token must be > 0 (got {self.chars_per_token!r})"
            )
        if not 0 <= self.memory_used <= 1:
            raise WorkerConfigError(
                f"simulated.memory_used must be in [0, 1] (got {self.memory_used!r})"
            )


@dataclass(slots=True, eq=False)
class _Seq:
    emit: Emit
    done: asyncio.Future[Ending]
    input_tokens: int
    target: int  # new tokens this run makes
    resumed: int  # tokens made before this run (the model counts them too)
    delivered: int = 0
    started: bool = False
    accrued: float = 0.0  # fractional tokens paced since the last chunk


class SimulatedBackend:
    """The fleet model as a backend. ``clock`` drives it; ``rng`` picks the words."""

    def __init__(
        self, config: SimulatedConfig, clock: Clock, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.clock = clock
        self.worker = Worker(config.worker_id, config.model)
        self._rng = rng if rng is not None else random.Random(config.seed)
        self._tick = config.chunk_interval_s or config.model.decode_step_s
        self._seqs: dict[str, _Seq] = {}
        self._streams = RequestStreams(self.name)
        self._driver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_step = clock.now()

    @property
    def name(self) -> str:
        return "simulated"

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        await self._streams.cancel_all()
        driver, self._driver = self._driver, None
        if driver is not None and not driver.done():
            driver.cancel()
            await asyncio.wait({driver})

    # ------------------------------------------------------------ requests

    def input_tokens(self, request: GenerationRequest) -> int:
        """The prompt's tokens: the request's estimate, else its length in characters."""
        if request.input_tokens_hint is not None:
            return request.input_tokens_hint
        prompt = request.prompt
        chars = (
            len(prompt)
            if isinstance(prompt, str)
            else sum(len(m.content) + len(m.role) for m in prompt)
        )
        return max(1, round(chars / self.config.chars_per_token))

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        async def produce(emit: Emit) -> Ending:
            input_tokens = self.input_tokens(request)
            if request.remaining_tokens == 0:
                return Ending(LENGTH, input_tokens=input_tokens, output_tokens=0)
            seq = _Seq(
                emit=emit,
                done=asyncio.get_running_loop().create_future(),
                input_tokens=input_tokens,
                target=request.remaining_tokens,
                resumed=request.resume_tokens,
            )
            now = self.clock.now()
            self._advance(now)  # settle the model up to now before changing it
            self.worker.add(
                request.request_id,
                request.tenant,
                input_tokens,
                request.max_tokens,
                now,
                done_output_tokens=request.resume_tokens,
            )
            self._seqs[request.request_id] = seq
            self._kick()
            try:
                return await seq.done
            except asyncio.CancelledError:
                if request.request_id in self._seqs:
                    now = self.clock.now()
                    self._advance(now)
                if self._seqs.pop(request.request_id, None) is not None:
                    self.worker.preempt(request.request_id, now)
                    self._kick()  # the batch shrank: the next event moved
                raise

        return self._streams.stream(request, produce)

    async def cancel(self, request_id: str) -> bool:
        return await self._streams.cancel(request_id)

    async def signals(self) -> EngineSignals:
        return EngineSignals(
            queue_depth=self.worker.queue_depth,
            running=self.worker.batch,
            kv_usage=self.worker.kv_usage,
        )

    # ------------------------------------------------------------ driving

    def settle(self) -> None:
        """Run the model up to the clock's now, delivering what is due."""
        self._advance(self.clock.now())

    def _kick(self) -> None:
        if self._driver is None or self._driver.done():
            self._driver = asyncio.create_task(self._drive(), name=f"sim-driver:{self.name}")
        self._wake.set()

    async def _drive(self) -> None:
        while self._seqs:
            self._wake.clear()
            now = self.clock.now()
            self._advance(now)
            if not self._seqs:
                break
            next_event = self.worker.next_event_s()
            wait = self._tick if next_event is None else min(self._tick, next_event - now)
            await self._sleep_or_wake(max(0.0, wait))

    async def _sleep_or_wake(self, seconds: float) -> None:
        sleep = asyncio.ensure_future(self.clock.sleep(seconds))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleep, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleep, wake):
                if not task.done():
                    task.cancel()

    def _advance(self, now: float) -> None:
        """Run the model to ``now``: pace running sequences, then apply its events."""
        elapsed = max(0.0, now - self._last_step)
        self._last_step = now
        running = [s for s in self._seqs.values() if s.started]
        if running and elapsed > 0:
            rate = 1.0 / self.config.model.step_s(max(1, self.worker.batch))
            for seq in running:
                seq.accrued += elapsed * rate
                # Never the last token: only the model's finish event makes it.
                room = seq.target - 1 - seq.delivered
                tokens = min(int(seq.accrued), room)
                if tokens > 0:
                    seq.accrued -= tokens
                    self._deliver(seq, tokens)
                elif room <= 0:
                    seq.accrued = 0.0
        for event in self.worker.advance(now):
            self._apply(event)

    def _apply(self, event: SeqEvent) -> None:
        seq = self._seqs.get(event.request_id)
        if seq is None:
            return
        made = min(seq.target, event.output_tokens - seq.resumed)
        if event.kind == "first_token":
            seq.started = True
            seq.accrued = 0.0
            if made > seq.delivered:
                self._deliver(seq, made - seq.delivered)
            return
        # finish: deliver the rest and end the stream
        if seq.target > seq.delivered:
            self._deliver(seq, seq.target - seq.delivered)
        del self._seqs[event.request_id]
        if not seq.done.done():
            seq.done.set_result(
                Ending(LENGTH, input_tokens=seq.input_tokens, output_tokens=seq.delivered)
            )

    def _deliver(self, seq: _Seq, tokens: int) -> None:
        words = [self._rng.choice(_WORDS) for _ in range(tokens)]
        seq.delivered += tokens
        seq.emit(Chunk("".join(f"{w} " for w in words), tokens))


class SimulatedGpuProbe:
    """GPU readings from a simulated backend's model: utilisation is the share of
    time its engine was busy since the previous read."""

    def __init__(self, backend: SimulatedBackend, device: int = 0) -> None:
        self._backend = backend
        self._device = device

    def read(self, now: float) -> tuple[GpuReading, ...]:
        self._backend.settle()  # busy time counts only iterations the model has run
        feedback = self._backend.worker.feedback(now)
        return (
            GpuReading(
                device=self._device,
                at_s=now,
                utilisation=feedback.gpu_util,
                memory_used=self._backend.config.memory_used,
            ),
        )

    def close(self) -> None:
        pass
