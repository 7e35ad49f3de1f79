"""The in-process transformers backend, with the tiny random model on CPU.

The model is loaded once for the module and shared by the thread-mode
backends the tests build (each backend has its own thread pool). The
continuous batching mode runs the same contract on a model of its own: its
manager switches the model's attention to a paged implementation while it
runs, so a model serves one such backend at a time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend_contract import BackendContract, BackendFactory, request
from workers.backends.base import (
    LENGTH,
    STOP,
    ChatMessage,
    Chunk,
    Finished,
    GenerationRequest,
    SamplingParams,
    collect,
)
from workers.backends.hf import HFBackend, HFConfig, IncrementalDetokenizer
from workers.backends.hf_batching import StopScanner
from workers.engine_metrics import EngineSignals
from workers.errors import WorkerConfigError

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model, tokenizer


class TestHFBackendContract(BackendContract):
    @pytest.fixture
    def make_backend(self, tiny_model_dir: Path, loaded: tuple[Any, Any]) -> BackendFactory:
        model, tokenizer = loaded
        config = HFConfig(str(tiny_model_dir), device="cpu", max_concurrency=2)
        return lambda: HFBackend(config, model=model, tokenizer=tokenizer)


def _load(path: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def batching_model(tiny_model_dir: Path) -> tuple[Any, Any]:
    """A model for the continuous batching backends only (see the docstring)."""
    return _load(tiny_model_dir)


def _continuous(loaded: tuple[Any, Any], max_concurrency: int = 2) -> HFBackend:
    model, tokenizer = loaded
    config = HFConfig("tiny", device="cpu", batching="continuous", max_concurrency=max_concurrency)
    return HFBackend(config, model=model, tokenizer=tokenizer)


class TestHFContinuousBatchingContract(BackendContract):
    @pytest.fixture
    def make_backend(self, batching_model: tuple[Any, Any]) -> BackendFactory:
        return lambda: _continuous(batching_model)


def _texts(backend: HFBackend, requests: list[GenerationRequest]) -> list[tuple[str, Finished]]:
    """Each request's whole text and end, all run at once on ``backend``."""

    async def one(req: GenerationRequest) -> tuple[str, Finished]:
        chunks, finished = await collect(backend.generate(req))
        return "".join(c.text for c in chunks), finished

    async def scenario() -> list[tuple[str, Finished]]:
        await backend.start()
        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            await backend.aclose()

    return asyncio.run(scenario())


PROMPTS = ("the tide gate", "north wind morning light", "one two three", "hello world request")


def test_continuous_batching_gives_each_request_what_generate_gives_it_alone(
    loaded: tuple[Any, Any], batching_model: tuple[Any, Any]
) -> None:
    """Four greedy requests with different prompts and lengths, batched
    together, each get exactly the text of a lone ``generate`` in threads."""
    reqs = [request(f"cb-{i}", 12 + 5 * i, prompt=p) for i, p in enumerate(PROMPTS)]
    model, tokenizer = loaded
    alone = _texts(
        HFBackend(HFConfig("tiny", device="cpu"), model=model, tokenizer=tokenizer), reqs
    )
    batched = _texts(_continuous(batching_model, max_concurrency=4), reqs)
    assert [text for text, _ in batched] == [text for text, _ in alone]
    assert [(f.output_tokens, f.reason) for _, f in batched] == [
        (12 + 5 * i, LENGTH) for i in range(len(PROMPTS))
    ]


def test_continuous_batching_ends_a_request_at_its_stop_string(
    batching_model: tuple[Any, Any],
) -> None:
    [(full, _)] = _texts(_continuous(batching_model), [request("whole", 40)])
    stop = full[12:18]  # spans more than one token, ends mid-stream
    cut = full[: full.index(stop) + len(stop)]
    sampling = SamplingParams(temperature=0.0, stop=(stop,))
    stopped = GenerationRequest("stopped", "the tide gate", max_tokens=40, sampling=sampling)
    [(text, finished)] = _texts(_continuous(batching_model), [stopped])
    assert text == cut
    assert finished.reason == STOP
    assert finished.output_tokens < 40


def test_continuous_batching_samples_per_request(batching_model: tuple[Any, Any]) -> None:
    """A sampled request beside a greedy one: each keeps its own sampling."""
    hot = SamplingParams(temperature=1.5, top_p=0.95)
    reqs = [
        GenerationRequest(f"hot-{i}", "the tide gate", max_tokens=30, sampling=hot)
        for i in range(3)
    ] + [request("greedy", 30)]
    results = _texts(_continuous(batching_model, max_concurrency=4), reqs)
    [(greedy_alone, _)] = _texts(_continuous(batching_model), [request("greedy", 30)])
    assert results[-1][0] == greedy_alone
    sampled = {text for text, _ in results[:-1]}
    assert len(sampled) > 1 or greedy_alone not in sampled  # sampling, not argmax


def test_continuous_batching_queues_past_max_concurrency(
    batching_model: tuple[Any, Any],
) -> None:
    async def scenario() -> tuple[EngineSignals, list[Finished]]:
        backend = _continuous(batching_model, max_concurrency=2)
        await backend.start()
        try:
            assert backend.batching == "continuous"
            streams = [backend.generate(request(f"q{i}", 60)) for i in range(5)]
            tasks = [asyncio.create_task(collect(s)) for s in streams]
            while ((signals := await backend.signals()).running or 0) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            ends = [finished for _, finished in await asyncio.gather(*tasks)]
            return signals, ends
        finally:
            await backend.aclose()

    signals, ends = asyncio.run(scenario())
    assert (signals.running, signals.queue_depth) == (2, 3)
    # The paged cache's use, as vLLM reports it (the worker then leaves out
    # NVML's memory figure: the cache was reserved up front).
    assert signals.kv_usage is not None
    assert 0.0 <= signals.kv_usage < 1.0
    assert [(f.output_tokens, f.reason) for f in ends] == [(60, LENGTH)] * 5


def test_auto_batching_is_threads_on_cpu(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded

    async def scenario() -> str:
        backend = HFBackend(HFConfig("tiny", device="cpu"), model=model, tokenizer=tokenizer)
        await backend.start()
        try:
            return backend.batching
        finally:
            await backend.aclose()

    assert asyncio.run(scenario()) == "threads"


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        ({"batching": "paged"}, "hf.batching must be one of"),
        ({"cache_memory": 1.0}, r"hf.cache_memory must be a number in \(0, 1\)"),
        ({"cache_memory": 0.0}, r"hf.cache_memory must be a number in \(0, 1\)"),
        ({"cache_memory": "half"}, r"hf.cache_memory must be a number in \(0, 1\)"),
        ({"cuda_graphs": "yes"}, "hf.cuda_graphs must be true or false"),
    ],
)
def test_bad_batching_options_name_the_field(options: dict[str, Any], rule: str) -> None:
    with pytest.raises(WorkerConfigError, match=rule):
        HFConfig("tiny", **options)


def test_the_stop_scanner_finds_a_stop_split_across_pieces() -> None:
    scanner = StopScanner(("STOP", "xy"))
    assert scanner.feed("abc ST") == ("abc ST", False)
    assert scanner.feed("OP and more") == ("OP", True)
    assert StopScanner(()).feed("anything") == ("anything", False)
    late = StopScanner(("end",))
    assert late.feed("the e") == ("the e", False)
    assert late.feed("nd, the end") == ("nd", True)


def test_the_backend_loads_a_checkpoint_by_path(tiny_model_dir: Path) -> None:
    async def scenario() -> list[Chunk]:
        backend = HFBackend(HFConfig(str(tiny_model_dir), device="auto", dtype="float32"))
        await backend.start()
        try:
            assert backend.device == "cpu"  # no GPU here: auto picks the CPU
            chat = (ChatMessage("user", "hello"),)
            chunks, finished = await collect(backend.generate(request("load-1", 6, prompt=chat)))
            assert finished.output_tokens == 6
            return chunks
        finally:
            await backend.aclose()

    assert asyncio.run(scenario())


def test_a_missing_checkpoint_is_a_clear_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-model-here"

    async def scenario() -> None:
        with pytest.raises(WorkerConfigError, match="no-model-here"):
            await HFBackend(HFConfig(str(missing), device="cpu")).start()

    asyncio.run(scenario())


def test_streamed_text_equals_the_decoded_output(loaded: tuple[Any, Any]) -> None:
    """Chunks concatenate to exactly what decoding all output tokens at once gives,
    even where one character's bytes span several byte-level tokens."""
    model, tokenizer = loaded

    async def scenario() -> str:
        backend = HFBackend(HFConfig("tiny", device="cpu"), model=model, tokenizer=tokenizer)
        await backend.start()
        try:
            chunks, _ = await collect(backend.generate(request("text-eq", 40)))
        finally:
            await backend.aclose()
        return "".join(c.text for c in chunks)

    streamed = asyncio.run(scenario())
    ids = tokenizer("the tide gate", return_tensors="pt")["input_ids"]
    out = model.generate(
        ids,
        attention_mask=ids.new_ones(ids.shape),
        max_new_tokens=40,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert streamed == tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_the_detokenizer_holds_back_incomplete_characters() -> None:
    # A stand-in decode over raw bytes: token ids are byte values.
    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    detok = IncrementalDetokenizer(decode)
    snow = "é☃".encode()  # 2 + 3 bytes
    pieces = [detok.push([b]) for b in b"ab" + snow]
    assert pieces == ["a", "b", "", "é", "", "", "☃"]
    assert detok.push([0xE2]) == ""  # half a character, then the stream ends
    assert detok.flush() == "\ufffd"
