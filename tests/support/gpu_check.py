"""GPU check: a worker on the GPU with the transformers backend, driven by load.

Builds a randomly initialised Llama of about 1B parameters on the GPU and
serves an open-loop load that ramps up, through the in-process transformers
backend, with the worker's feedback path running for real: the NVML probe
sampled every 0.5 s, latency measured on the streams, ``build_feedback``,
and the scheduler's AIMD window deciding how many requests the worker holds.
One line per report shows the readings and the window adapting.

    python3 -m tests.support.gpu_check                        # GPU node, ~2 min
    python -m tests.support.gpu_check --tiny --seconds 8      # CPU smoke run

Needs torch and transformers (the GPU image has both); nothing is
downloaded. Without a GPU the probe is a scripted one, and it says so.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scheduler.clock import MonotonicClock
from scheduler.policy import create_policy
from scheduler.types import Request, SchedulerConfig, TenantConfig, WindowConfig
from tests.support.tiny_model import TinyModelSpec, make_model, make_tokenizer
from workers.backends.base import Finished, GenerationRequest, SamplingParams
from workers.backends.hf import HFBackend, HFConfig
from workers.feedback import LatencyTracker, build_feedback
from workers.probe import GpuReading, ProbeSampler, ScriptedProbe, detect_probe

ONE_B = TinyModelSpec(hidden_size=2048, intermediate_size=5632, layers=20, heads=16, kv_heads=8)
WORKER = "gpu0"
_WORD_TEXT = "tide gate harbour lantern river stone north evening quiet signal"
WORDS = tuple(_WORD_TEXT.split())


@dataclass
class Load:
    """Counters the report line shows, reset per report where marked."""

    arrived: int = 0
    completed: int = 0
    tokens: int = 0  # per report
    total_tokens: int = 0
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)


def _fmt(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _baseline(model: Any, tokenizer: Any, torch: Any) -> None:
    """The engine alone, without tidegate: ``generate`` on batches of 1 and 16,
    and continuous batching of 32 requests, 64 new tokens each. Separates
    what the model costs on this machine from what the backend adds."""
    ids = tokenizer(" ".join(WORDS * 20), return_tensors="pt")["input_ids"].to(model.device)
    new = 64
    for batch in (1, 16):
        prompt = ids.repeat(batch, 1)
        with torch.inference_mode():
            model.generate(prompt, max_new_tokens=4, do_sample=False)  # warm up
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
            model.generate(
                prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False
            )
            if model.device.type == "cuda":
                torch.cuda.synchronize()
        took = time.perf_counter() - began
        print(
            f"baseline: generate, batch {batch}: {took / new * 1000:.1f} ms/step, "
            f"{batch * new / took:.0f} tokens/s",
            flush=True,
        )
    import transformers

    config: Any = transformers.GenerationConfig(  # type: ignore[no-untyped-call]
        do_sample=False, max_new_tokens=new, eos_token_id=-1
    )
    prompts = [ids[0].tolist() for _ in range(32)]
    model.generate_batch(prompts[:2], generation_config=config)  # warm up
    began = time.perf_counter()
    model.generate_batch(prompts, generation_config=config)
    took = time.perf_counter() - began
    print(
        f"baseline: continuous batching, 32 requests: {took:.2f}s, {32 * new / took:.0f} tokens/s",
        flush=True,
    )


async def check(args: argparse.Namespace) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    spec = TinyModelSpec() if args.tiny else ONE_B
    started = time.monotonic()
    tokenizer = make_tokenizer(spec)
    with torch.device(device):
        model = make_model(tokenizer, spec)
    if device == "cuda":
        model = model.to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    print(
        f"model: {params / 1e9:.2f}B parameters on {device}, built in "
        f"{time.monotonic() - started:.1f}s",
        flush=True,
    )

    if args.baseline:
        _baseline(model, tokenizer, torch)

    backend = HFBackend(
        HFConfig(
            "random-llama",
            device=device,
            max_concurrency=args.max_concurrency,
            batching=args.batching,
            cuda_graphs=args.cuda_graphs,
        ),
        model=model,
        tokenizer=tokenizer,
    )
    await backend.start()
    print(f"batching: {backend.batching}", flush=True)
    clock = MonotonicClock()
    calm = GpuReading(0, 0.0, utilisation=0.5, memory_used=0.3)
    probe = detect_probe(ScriptedProbe([calm]))
    kind = "scripted (no GPU)" if isinstance(probe, ScriptedProbe) else "NVML"
    sampler = ProbeSampler(probe, clock, interval_s=args.report_s)
    window = WindowConfig(
        initial=4,
        minimum=1,
        maximum=args.max_concurrency,
        target_ttft_s=args.target_ttft,
        target_tpot_s=args.target_tpot,
        adjust_interval_s=args.report_s,
    )
    tenants = MappingProxyType({"load": TenantConfig("load", max_queued=100_000)})
    rng = random.Random(args.seed)
    policy = create_policy("tidegate", SchedulerConfig(tenants=tenants, window=window), rng)
    policy.add_worker(WORKER, clock.now())
    tracker = LatencyTracker()
    load = Load()

    async def serve(request: Request, prompt: str) -> None:
        rid = request.request_id
        tracker.started(rid, clock.now())
        first = True
        gen = GenerationRequest(
            rid, prompt, max_tokens=request.output_tokens, sampling=SamplingParams(0.0)
        )
        try:
            async for event in backend.generate(gen):
                now = clock.now()
                if isinstance(event, Finished):
                    policy.complete(rid, event.input_tokens, event.output_tokens, now)
                    load.completed += 1
                    continue
                tracker.chunk(rid, event.tokens, now)
                load.tokens += event.tokens
                load.total_tokens += event.tokens
                if first:
                    policy.first_token(rid, now)
                    first = False
        finally:
            tracker.finished(rid)
            load.running.pop(rid, None)

    print(
        f"probe: {kind}; window: initial {window.initial}, targets ttft "
        f"{window.target_ttft_s}s tpot {window.target_tpot_s}s; load ramps "
        f"{args.start_rate} -> {args.end_rate} req/s over {args.seconds}s",
        flush=True,
    )
    print(
        f"{'t':>5} {'arr':>5} {'queue':>5} {'win':>4} {'run':>4} {'util%':>6} {'mem%':>5} "
        f"{'occ%':>5} {'temp':>5} {'watt':>6} {'ttft':>6} {'tpot':>6} {'tok/s':>7}",
        flush=True,
    )
    begin = clock.now()
    next_arrival = begin
    next_report = begin + args.report_s
    prompts: dict[str, str] = {}
    while (now := clock.now()) - begin < args.seconds:
        elapsed = now - begin
        rate = args.start_rate + (args.end_rate - args.start_rate) * elapsed / args.seconds
        while next_arrival <= now:
            rid = f"q{load.arrived}"
            load.arrived += 1
            prompt = " ".join(rng.choice(WORDS) for _ in range(args.prompt_words))
            prompts[rid] = prompt
            policy.submit(
                Request(
                    rid,
                    "load",
                    input_tokens=args.prompt_words,
                    output_tokens=args.output_tokens,
                    arrival_s=now,
                ),
                now,
            )
            next_arrival += rng.expovariate(max(rate, 1e-6))
        for dispatch in policy.dispatch(now, WORKER):
            rid = dispatch.request.request_id
            load.running[rid] = asyncio.create_task(serve(dispatch.request, prompts.pop(rid)))
        if now >= next_report:
            readings = sampler.sample()
            signals = await backend.signals()
            latency = tracker.summary(now)
            policy.feedback(WORKER, build_feedback(readings, signals, latency), now)
            stats = policy.stats()
            worker = stats.workers[WORKER]
            r = readings[0] if readings else GpuReading(0, now)
            print(
                f"{elapsed:5.1f} {load.arrived:5d} {stats.queued:5d} {worker.window:4d} "
                f"{worker.in_flight:4d} {_fmt(r.utilisation, 100, 0):>6} "
                f"{_fmt(r.memory_used, 100, 0):>5} {_fmt(r.sm_occupancy, 100, 0):>5} "
                f"{_fmt(r.temperature_c, 1, 0):>5} {_fmt(r.power_w, 1, 0):>6} "
                f"{_fmt(latency.ttft_s):>6} {_fmt(latency.tpot_s, 1, 3):>6} "
                f"{load.tokens / args.report_s:7.0f}",
                flush=True,
            )
            load.tokens = 0
            next_report += args.report_s
        await asyncio.sleep(0.02)
    for task in list(load.running.values()):
        task.cancel()
    await asyncio.gather(*load.running.values(), return_exceptions=True)
    await backend.aclose()
    probe.close()
    final = policy.stats().workers[WORKER]
    print(
        f"done: {load.arrived} arrived, {load.completed} completed, "
        f"{load.total_tokens} tokens ({load.total_tokens / args.seconds:.0f}/s); window "
        f"{final.increases} increases, {final.decreases} decreases, final {final.window}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tiny", action="store_true", help="the tiny model on CPU (smoke run)")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--report-s", type=float, default=0.5)
    parser.add_argument("--start-rate", type=float, default=1.0)
    parser.add_argument("--end-rate", type=float, default=30.0)
    parser.add_argument("--prompt-words", type=int, default=200)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--max-concurrency", type=int, default=48)
    parser.add_argument("--target-ttft", type=float, default=1.0)
    parser.add_argument("--target-tpot", type=float, default=0.06)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="continuous batching steps as CUDA graphs (default: transformers decides)",
    )
    parser.add_argument(
        "--baseline", action="store_true", help="first time the engine alone (no tidegate)"
    )
    parser.add_argument("--batching", choices=("auto", "continuous", "threads"), default="auto")
    args: Any = parser.parse_args(argv)
    asyncio.run(check(args))


if __name__ == "__main__":
    main()
