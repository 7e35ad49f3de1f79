"""In-process vLLM backend: an ``AsyncLLMEngine`` inside the worker.

For GPU nodes where vLLM is installed (it is not a dependency of tidegate:
``pip install vllm`` on the node). Without it, starting this backend raises
:class:`~workers.errors.BackendNotInstalledError` naming the package.

vLLM does the batching; each request is one ``engine.generate`` stream with
``RequestOutputKind.DELTA`` outputs (only the new text and token ids of each
step). Priority: vLLM runs lower values first, so the scheduler's priority
(higher first) is negated, and it is passed only when the engine was built
with the ``priority`` scheduling policy (vLLM refuses a priority otherwise).
Cancelling the request's producer task cancels vLLM's generator, which
aborts the request in the engine and frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from workers.backends.base import (
    CANCELLED,
    LENGTH,
    STOP,
    Chunk,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
)
from workers.backends.streams import Emit, Ending, RequestStreams
from workers.engine_metrics import EngineSignals
from workers.errors import BackendFailedError, BackendNotInstalledError, WorkerConfigError

__all__ = ["VllmBackend", "VllmConfig", "import_vllm"]


def _no_options() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class VllmConfig:
    """``engine_options`` go to ``AsyncEngineArgs`` as they are (``max_model_len``,
    ``gpu_memory_utilization``...)."""

    model: str
    priority_scheduling: bool = True
    dtype: str = "auto"
    engine_options: Mapping[str, Any] = field(default_factory=_no_options)

    def __post_init__(self) -> None:
        if not self.model:
            raise WorkerConfigError("vllm.model must not be empty")


def import_vllm() -> Any:
    """The vllm package, or BackendNotInstalledError naming it."""
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise BackendNotInstalledError(
            "the vllm backend needs the 'vllm' package, which is not installed here "
            "(pip install vllm on a GPU node), or use the openai backend against a "
            f"vLLM server: {exc}"
        ) from exc


def _reason(value: object) -> FinishReason:
    if value == "length":
        return LENGTH
    if value == "abort":
        return CANCELLED
    return STOP


class VllmBackend:
    """vLLM's async engine in this process. ``engine`` may be passed already built."""

    def __init__(self, config: VllmConfig, *, engine: Any = None) -> None:
        self.config = config
        self._engine = engine
        self._vllm: Any = None
        self._tokenizer: Any = None
        self._streams = RequestStreams(self.name)

    @property
    def name(self) -> str:
        return "vllm"

    async def start(self) -> None:
        if self._vllm is not None:
            return
        vllm = import_vllm()
        if self._engine is None:
            options = dict(self.config.engine_options)
            if self.config.priority_scheduling:
                options.setdefault("scheduling_policy", "priority")
            args = vllm.AsyncEngineArgs(model=self.config.model, dtype=self.config.dtype, **options)
            self._engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self._tokenizer = await self._engine.get_tokenizer()
        self._vllm = vllm

    async def aclose(self) -> None:
        await self._streams.cancel_all()
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()

    def _prompt(self, request: GenerationRequest) -> str:
        if isinstance(request.prompt, str):
            return request.prompt + request.resume_text
        messages = [{"role": m.role, "content": m.content} for m in request.prompt]
        text = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        # The answer so far follows the assistant's header: the model continues it.
        return str(text) + request.resume_text

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        async def produce(emit: Emit) -> Ending:
            if self._vllm is None or self._engine is None:
                raise BackendFailedError(f"vllm backend not started (request {request.request_id})")
            if request.remaining_tokens == 0:
                return Ending(LENGTH, output_tokens=0)
            return await self._produce(request, emit)

        return self._streams.stream(request, produce)

    async def _produce(self, request: GenerationRequest, emit: Emit) -> Ending:
        vllm = self._vllm
        sampling = request.sampling
        params = vllm.SamplingParams(
            max_tokens=request.remaining_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            output_kind=importlib.import_module("vllm.sampling_params").RequestOutputKind.DELTA,
        )
        extra: dict[str, Any] = {}
        if self.config.priority_scheduling:
            extra["priority"] = -request.priority  # vLLM: lower runs first
        made = 0
        input_tokens: int | None = None
        reason: FinishReason = STOP
        try:
            async for output in self._engine.generate(
                self._prompt(request), params, request.request_id, **extra
            ):
                if output.prompt_token_ids is not None:
                    input_tokens = len(output.prompt_token_ids)
                for completion in output.outputs[:1]:
                    tokens = len(completion.token_ids)
                    if completion.text or tokens:
                        made += tokens
                        emit(Chunk(completion.text, tokens))
                    if completion.finish_reason is not None:
                        reason = _reason(completion.finish_reason)
        except asyncio.CancelledError:
            raise  # vLLM's generator aborts the request in the engine as it unwinds
        except Exception as exc:
            raise BackendFailedError(f"vLLM failed request {request.request_id}: {exc!r}") from exc
        return Ending(reason, input_tokens, made)

    async def cancel(self, request_id: str) -> bool:
        return await self._streams.cancel(request_id)

    async def signals(self) -> EngineSignals:
        """Unknown: vLLM's queue and KV figures are on the Prometheus metrics of
        its server, which an in-process engine does not serve. The GPU probe
        and measured latency still feed the window."""
        return EngineSignals()
