"""The in-process transformers backend, with the tiny random model on CPU.

The model is loaded once for the module and shared by the backends the
tests build (each backend has its own thread pool).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend_contract import BackendContract, BackendFactory, request
from workers.backends.base import ChatMessage, Chunk, collect
from workers.backends.hf import HFBackend, HFConfig, IncrementalDetokenizer
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
