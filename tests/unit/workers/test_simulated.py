"""The simulated backend follows the fleet model's clock exactly (virtual time)."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.clock import VirtualClock
from scheduler.sim.fleet import FleetModel, Worker
from workers.backends.base import CANCELLED, LENGTH, Chunk, Finished, GenerationRequest, collect
from workers.backends.simulated import SimulatedBackend, SimulatedConfig, SimulatedGpuProbe
from workers.engine_metrics import EngineSignals
from workers.errors import WorkerConfigError

from .virtual import autojump, settle

MODEL = FleetModel(
    prefill_tokens_per_s=1000.0,
    decode_step_s=0.010,
    decode_step_per_seq_s=0.005,
    max_batch=2,
    kv_capacity_tokens=10_000,
    prefill_chunk_tokens=2048,
)


def req(rid: str, input_tokens: int, max_tokens: int, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(
        rid,
        "prompt",
        max_tokens=max_tokens,
        input_tokens_hint=input_tokens,
        **kwargs,  # type: ignore[arg-type]
    )


Timeline = list[tuple[float, str, int]]  # (time, "chunk"/"end", tokens)


async def timed(backend: SimulatedBackend, request: GenerationRequest, log: Timeline) -> Finished:
    async for event in backend.generate(request):
        now = backend.clock.now()
        if isinstance(event, Finished):
            log.append((now, "end", event.output_tokens))
            return event
        log.append((now, "chunk", event.tokens))
    raise AssertionError("no Finished")


def test_one_request_streams_at_the_models_pace() -> None:
    clock = VirtualClock()
    backend = SimulatedBackend(SimulatedConfig(model=MODEL), clock)
    log: Timeline = []
    finished = asyncio.run(autojump(clock, timed(backend, req("r1", 100, 10), log)))

    assert finished == Finished(100, 10, LENGTH)
    # Prefill 100 tokens at 1000/s: the first token at 0.1 s. Then 9 decode
    # steps of 0.010 + 0.005 x 1 s each: the last token at 0.235 s.
    first, *_, end = log
    assert first == pytest.approx((0.1, "chunk", 1))
    assert end[0] == pytest.approx(0.235)
    assert sum(n for _, kind, n in log if kind == "chunk") == 10
    times = [t for t, _, _ in log]
    assert times == sorted(times)
    # Paced, not dumped at the end: a chunk about every step in between.
    assert len([t for t, kind, _ in log if kind == "chunk" and 0.1 < t < 0.235]) >= 6


def test_first_tokens_and_finishes_match_the_pure_fleet_model() -> None:
    """Three requests arriving at different times, two at a time in the batch."""
    arrivals = [("a", 0.0, 200, 30), ("b", 0.05, 50, 20), ("c", 0.07, 100, 5)]

    reference = Worker("ref", MODEL)
    expected: dict[str, dict[str, float]] = {}
    for rid, at, input_tokens, output_tokens in arrivals:
        for event in reference.advance(at):
            expected.setdefault(event.request_id, {})[event.kind] = event.at_s
        reference.add(rid, "t", input_tokens, output_tokens, at)
    while (next_s := reference.next_event_s()) is not None:
        for event in reference.advance(next_s):
            expected.setdefault(event.request_id, {})[event.kind] = event.at_s

    clock = VirtualClock()
    backend = SimulatedBackend(SimulatedConfig(model=MODEL), clock)
    logs: dict[str, Timeline] = {rid: [] for rid, *_ in arrivals}

    async def arrive(rid: str, at: float, input_tokens: int, output_tokens: int) -> Finished:
        await clock.sleep(at)
        return await timed(backend, req(rid, input_tokens, output_tokens), logs[rid])

    async def scenario() -> list[Finished]:
        return list(await asyncio.gather(*(arrive(*a) for a in arrivals)))

    finished = asyncio.run(autojump(clock, scenario()))
    assert [f.output_tokens for f in finished] == [30, 20, 5]
    for rid, *_ in arrivals:
        first_chunk = logs[rid][0][0]
        end = logs[rid][-1][0]
        assert first_chunk == pytest.approx(expected[rid]["first_token"]), rid
        assert end == pytest.approx(expected[rid]["finish"]), rid


def test_cancel_preempts_the_sequence_and_a_resume_continues_it() -> None:
    clock = VirtualClock()
    backend = SimulatedBackend(SimulatedConfig(model=MODEL), clock)

    async def scenario() -> tuple[Finished, Finished, int]:
        events = []
        stream = backend.generate(req("r1", 100, 50))
        async for event in stream:
            events.append(event)
            if clock.now() >= 0.2 and backend.worker.in_flight:
                assert await backend.cancel("r1")
        cancelled = events[-1]
        assert isinstance(cancelled, Finished)
        in_flight = backend.worker.in_flight
        delivered = cancelled.output_tokens
        resumed = req("r1", 100, 50, resume_text="x " * delivered, resume_tokens=delivered)
        chunks, done = await collect(backend.generate(resumed))
        assert sum(c.tokens for c in chunks) == 50 - delivered
        return cancelled, done, in_flight

    cancelled, done, in_flight = asyncio.run(autojump(clock, scenario()))
    assert cancelled.reason == CANCELLED
    assert 1 <= cancelled.output_tokens < 50
    assert in_flight == 0  # the model let go of the sequence and its KV cache
    assert done.reason == LENGTH
    assert (done.resumed_tokens, done.total_output_tokens) == (cancelled.output_tokens, 50)


def test_signals_show_the_engine_queue_and_kv_use() -> None:
    clock = VirtualClock()
    backend = SimulatedBackend(SimulatedConfig(model=MODEL), clock)

    async def scenario() -> tuple[EngineSignals, EngineSignals]:
        streams = [
            asyncio.ensure_future(collect(backend.generate(req(f"r{i}", 100, 20))))
            for i in range(3)
        ]
        await settle()
        busy = await backend.signals()
        await backend.aclose()
        await asyncio.gather(*streams, return_exceptions=True)
        return busy, await backend.signals()

    busy, idle = asyncio.run(scenario())
    # max_batch=2: two run, one waits; each holds 100 + 20 tokens of KV.
    assert busy == EngineSignals(queue_depth=1, running=2, kv_usage=240 / 10_000)
    assert idle == EngineSignals(queue_depth=0, running=0, kv_usage=0.0)


def test_the_gpu_probe_reports_the_models_busy_share() -> None:
    clock = VirtualClock()
    backend = SimulatedBackend(SimulatedConfig(model=MODEL, memory_used=0.85), clock)
    probe = SimulatedGpuProbe(backend)

    async def scenario() -> tuple[float | None, float | None, float | None]:
        probe.read(clock.now())
        await collect(backend.generate(req("r1", 100, 10)))  # busy 0 .. 0.235 s
        busy = probe.read(clock.now())[0]
        await clock.sleep(0.235)  # as long again, idle
        half = probe.read(clock.now())[0]
        return busy.utilisation, half.utilisation, busy.memory_used

    busy, half, memory = asyncio.run(autojump(clock, scenario()))
    assert busy == pytest.approx(1.0)
    assert half == pytest.approx(0.0)
    assert memory == 0.85


def test_a_text_prompt_without_an_estimate_is_counted_by_characters() -> None:
    backend = SimulatedBackend(SimulatedConfig(chars_per_token=4.0), VirtualClock())
    assert backend.input_tokens(GenerationRequest("r", "x" * 40, max_tokens=1)) == 10
    assert backend.input_tokens(GenerationRequest("r", "", max_tokens=1)) == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"chunk_interval_s": 0.0}, "chunk_interval_s"),
        ({"chars_per_token": 0.0}, "chars_per_token"),
        ({"memory_used": 1.5}, "memory_used"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(WorkerConfigError, match=field):
        SimulatedConfig(**kwargs)  # type: ignore[arg-type]


def test_chunks_carry_one_word_per_token() -> None:
    clock = VirtualClock()
    backend = SimulatedBackend(SimulatedConfig(model=MODEL, seed=7), clock)
    chunks, _ = asyncio.run(autojump(clock, collect(backend.generate(req("r1", 10, 12)))))
    assert all(isinstance(c, Chunk) and len(c.text.split()) == c.tokens for c in chunks)
