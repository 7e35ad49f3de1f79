"""In-process transformers backend: continuous batching, or ``generate`` in threads.

For a GPU node that runs a checkpoint itself (no separate engine), and for
tests with a tiny random model on CPU. Two ways to run requests
(``batching``):

* ``continuous`` (the default on a GPU): transformers' continuous batching
  manager steps all running requests together over a paged KV cache
  (:mod:`workers.backends.hf_batching`); up to ``max_concurrency`` run at
  once, the rest wait, and the waiting ones are the queue depth.
* ``threads`` (the default on CPU): each request runs ``generate`` in a
  thread of a pool of ``max_concurrency`` threads (PyTorch releases the GIL
  in its kernels, so threads overlap on CPU and queue kernels on a GPU); a
  request waiting for a thread is the queue depth. One sequence per forward
  pass: on a GPU most of each step is Python, which is why it is not the
  default there.

Tokens leave the thread through a streamer that hands each step's token ids
to the event loop; the loop turns them into text with an incremental
detokenizer (bytes of one character can span tokens, so text is released
only once it decodes cleanly). Cancelling sets a flag a stopping criterion
checks before each step, so the thread stops within one forward pass.

torch and transformers are imported when the backend starts: they are an
optional extra (``pip install 'tidegate[hf]'``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from workers.backends.hf_batching import (
    BatchedDecoder,
    DecodeStream,
    StopScanner,
    supports_continuous_batching,
)
from workers.backends.streams import Emit, Ending, RequestStreams
from workers.engine_metrics import EngineSignals
from workers.errors import (
    BackendFailedError,
    BackendNotInstalledError,
    BackendRejectedError,
    WorkerConfigError,
)

__all__ = ["HFBackend", "HFConfig", "IncrementalDetokenizer"]

_DTYPES = ("auto", "float32", "float16", "bfloat16")
_BATCHING = ("auto", "continuous", "threads")
_GPU_CACHE_MEMORY = 0.5
_CPU_CACHE_MEMORY = 0.05


@dataclass(frozen=True, slots=True)
class HFConfig:
    """``model``: a local checkpoint directory (or a hub id where the hub is
    reachable). ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (the GPU
    when there is one). ``dtype``: ``auto`` is bfloat16 on a GPU that has it,
    else float32. ``batching``: ``continuous``, ``threads``, or ``auto``
    (continuous on a GPU, threads on CPU; see the module docstring).
    ``cache_memory``: the share of free memory the continuous batching KV
    cache takes at start; None is half the free GPU memory (keep it under
    the window's GPU-memory limit, ``scheduler.window.max_gpu_mem``, or the
    window will not grow), or 5% of free RAM on CPU.
    ``cuda_graphs``: replay each continuous batching step as CUDA graphs
    (one launch instead of hundreds); None is yes on a GPU. transformers
    leaves them off for SDPA attention, but on an H100 a 1B model decoded
    ~850 tokens/s with them against ~210 without (the GPU check)."""

    model: str
    device: str = "auto"
    dtype: str = "auto"
    max_concurrency: int = 4
    batching: str = "auto"
    cache_memory: float | None = None
    cuda_graphs: bool | None = None

    def __post_init__(self) -> None:
        if not self.model:
            raise WorkerConfigError("hf.model must not be empty")
        if self.dtype not in _DTYPES:
            raise WorkerConfigError(f"hf.dtype must be one of {_DTYPES} (got {self.dtype!r})")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise WorkerConfigError(
                f"hf.device must be auto, cpu, cuda or cuda:N (got {self.device!r})"
            )
        if self.max_concurrency < 1:
            raise WorkerConfigError(
                f"hf.max_concurrency must be >= 1 (got {self.max_concurrency!r})"
            )
        if self.batching not in _BATCHING:
            raise WorkerConfigError(
                f"hf.batching must be one of {_BATCHING} (got {self.batching!r})"
            )
        memory = self.cache_memory
        if memory is not None and (
            isinstance(memory, bool) or not isinstance(memory, int | float) or not 0 < memory < 1
        ):
            raise WorkerConfigError(f"hf.cache_memory must be a number in (0, 1) (got {memory!r})")
        if self.cuda_graphs is not None and not isinstance(self.cuda_graphs, bool):
            raise WorkerConfigError(
                f"hf.cuda_graphs must be true or false (got {self.cuda_graphs!r})"
            )


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text, one clean piece at a time.

    Decoding a token alone loses the spacing and merged bytes its neighbours
    give it, and decoding everything each step costs O(n^2). So it decodes a
    short window: the text of ``ids[prefix:]`` minus the text of
    ``ids[prefix:read]``. A piece ending in U+FFFD (an incomplete UTF-8
    sequence) waits for the next token. ``context`` seeds the window with
    tokens already shown (a resumed request's last tokens).
    """

    def __init__(self, decode: Callable[[list[int]], str], context: list[int] | None = None):
        self._decode = decode
        self._ids: list[int] = list(context or [])
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, ids: list[int]) -> str:
        self._ids.extend(ids)
        shown = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(shown) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(shown) :]
        return ""

    def flush(self) -> str:
        """Whatever is left, complete or not (the stream is ending)."""
        shown = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return text[len(shown) :] if len(text) > len(shown) else ""


@dataclass(frozen=True, slots=True)
class _Result:
    input_tokens: int
    output_tokens: int
    reason: FinishReason


class HFBackend:
    """Runs a transformers causal LM in this process. See the module docstring.

    ``model`` and ``tokenizer`` may be passed already loaded (tests share
    one); otherwise :meth:`start` loads ``config.model``.
    """

    def __init__(self, config: HFConfig, *, model: Any = None, tokenizer: Any = None) -> None:
        if (model is None) != (tokenizer is None):
            raise WorkerConfigError("pass both model and tokenizer, or neither")
        self.config = config
        self._model = model
        self._tokenizer = tokenizer
        self._torch: Any = None
        self._device: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._decoder: BatchedDecoder | None = None
        self._slots: asyncio.Semaphore | None = None
        self._streams = RequestStreams(self.name)
        self._lock = threading.Lock()
        self._waiting = 0
        self._active = 0

    @property
    def name(self) -> str:
        return "hf"

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def batching(self) -> str:
        """``continuous`` or ``threads`` once started (``auto`` resolved)."""
        return "continuous" if self._decoder is not None else "threads"

    async def start(self) -> None:
        if self._executor is not None or self._decoder is not None:
            return
        await asyncio.to_thread(self._load)
        if self._use_continuous():
            self._decoder = await asyncio.to_thread(
                BatchedDecoder.open,
                self._model,
                memory_fraction=self._cache_memory(),
                cuda_graphs=self._cuda_graphs(),
            )
            self._slots = asyncio.Semaphore(self.config.max_concurrency)
        else:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.max_concurrency, thread_name_prefix="hf-generate"
            )

    def _cache_memory(self) -> float:
        if self.config.cache_memory is not None:
            return self.config.cache_memory
        return _GPU_CACHE_MEMORY if self._device.type == "cuda" else _CPU_CACHE_MEMORY

    def _cuda_graphs(self) -> bool | None:
        if self.config.cuda_graphs is not None:
            return self.config.cuda_graphs
        return True if self._device.type == "cuda" else None  # None: transformers decides

    def _use_continuous(self) -> bool:
        batching = self.config.batching
        if batching == "threads":
            return False
        supported = supports_continuous_batching(self._model)
        if batching == "continuous" and not supported:
            raise WorkerConfigError(
                "hf.batching is 'continuous' but this transformers has no continuous "
                "batching (it came in transformers 5); use 'threads' or upgrade"
            )
        return supported and (batching == "continuous" or self._device.type == "cuda")

    def _load(self) -> None:
        try:
            # Optional, heavy: imported only when an hf backend starts.
            import torch  # noqa: PLC0415
            import transformers  # noqa: PLC0415
        except ImportError as exc:
            raise BackendNotInstalledError(
                f"the hf backend needs torch and transformers ({exc.name} is missing): "
                "pip install 'tidegate[hf]'"
            ) from exc
        self._torch = torch
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise WorkerConfigError(f"hf.device is {device!r} but torch sees no CUDA device")
        self._device = torch.device(device)
        if self._model is None:
            dtype: Any = self.config.dtype
            if dtype == "auto":
                gpu_bf16 = self._device.type == "cuda" and torch.cuda.is_bf16_supported()
                dtype = torch.bfloat16 if gpu_bf16 else torch.float32
            else:
                dtype = getattr(torch, dtype)
            try:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.config.model)
                self._model = transformers.AutoModelForCausalLM.from_pretrained(
                    self.config.model, dtype=dtype
                )
            except (OSError, ValueError) as exc:
                raise WorkerConfigError(
                    f"hf.model {self.config.model!r} cannot be loaded: {exc}"
                ) from exc
        self._model.to(self._device)
        self._model.eval()

    async def aclose(self) -> None:
        await self._streams.cancel_all()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            await asyncio.to_thread(decoder.close)

    # ------------------------------------------------------------ requests

    def _prompt_ids(self, request: GenerationRequest) -> tuple[list[int], list[int]]:
        """(prompt + resumed output) token ids, and the resumed part's ids."""
        tok = self._tokenizer
        if isinstance(request.prompt, str):
            ids = list(tok(request.prompt, add_special_tokens=True)["input_ids"])
        else:
            messages = [{"role": m.role, "content": m.content} for m in request.prompt]
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            # The template writes its own special tokens (a BOS among them).
            ids = list(tok(text, add_special_tokens=False)["input_ids"])
        resumed: list[int] = []
        if request.resume_text:
            resumed = list(tok(request.resume_text, add_special_tokens=False)["input_ids"])
        return ids + resumed, resumed

    def _encode(self, request: GenerationRequest) -> tuple[list[int], list[int]]:
        try:
            return self._prompt_ids(request)
        except (ValueError, TypeError, KeyError) as exc:
            # e.g. a chat prompt for a tokenizer without a chat template
            raise BackendRejectedError(
                f"hf model {self.config.model!r} cannot encode request {request.request_id}: {exc}"
            ) from exc

    def _detokenizer(self, resumed: list[int]) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(
            lambda t: str(self._tokenizer.decode(t, skip_special_tokens=True)), resumed[-4:]
        )

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        async def produce(emit: Emit) -> Ending:
            decoder, slots = self._decoder, self._slots
            if self._executor is None and (decoder is None or slots is None):
                raise BackendFailedError(f"hf backend not started (request {request.request_id})")
            if request.remaining_tokens == 0:
                return Ending(LENGTH, output_tokens=0)
            if decoder is not None and slots is not None:
                return await self._produce_batched(request, emit, decoder, slots)
            assert self._executor is not None
            return await self._produce(request, emit, self._executor)

        return self._streams.stream(request, produce)

    async def _produce(
        self, request: GenerationRequest, emit: Emit, executor: ThreadPoolExecutor
    ) -> Ending:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[list[int] | None] = asyncio.Queue()
        cancel = threading.Event()
        ids, resumed = self._encode(request)

        def push(tokens: list[int] | None) -> None:
            loop.call_soon_threadsafe(inbox.put_nowait, tokens)

        with self._lock:
            self._waiting += 1
        future = loop.run_in_executor(executor, self._run, request, ids, cancel, push)
        detok = self._detokenizer(resumed)
        pending = 0
        try:
            while (tokens := await inbox.get()) is not None:
                pending += len(tokens)
                text = detok.push(tokens)
                if text:
                    emit(Chunk(text, pending))
                    pending = 0
            result = await future
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait({future})  # the thread stops within one forward pass
            raise
        except Exception as exc:
            raise BackendFailedError(
                f"transformers failed request {request.request_id}: {exc!r}"
            ) from exc
        if pending:
            emit(Chunk(detok.flush(), pending))
        return Ending(result.reason, result.input_tokens, result.output_tokens)

    async def _produce_batched(
        self,
        request: GenerationRequest,
        emit: Emit,
        decoder: BatchedDecoder,
        slots: asyncio.Semaphore,
    ) -> Ending:
        ids, resumed = self._encode(request)
        detok = self._detokenizer(resumed)
        stops = StopScanner(request.sampling.stop)
        with self._lock:
            self._waiting += 1
        try:
            await slots.acquire()
        finally:
            with self._lock:
                self._waiting -= 1
        with self._lock:
            self._active += 1
        stream: DecodeStream | None = None
        pending = 0
        try:
            stream = decoder.submit(ids, request.remaining_tokens, request.sampling)
            async for tokens in stream:
                pending += len(tokens)
                text, stopped = stops.feed(detok.push(tokens))
                if text or stopped:
                    emit(Chunk(text, pending))
                    pending = 0
                if stopped:
                    stream.cancel()
                    return Ending(STOP, len(ids), stream.made)
            if pending:
                emit(Chunk(stops.feed(detok.flush())[0], pending))
            reason: FinishReason = LENGTH if stream.made >= request.remaining_tokens else STOP
            return Ending(reason, len(ids), stream.made)
        finally:
            if stream is not None:
                stream.cancel()  # a no-op once it ended; upstream otherwise
            with self._lock:
                self._active -= 1
            slots.release()

    def _run(
        self,
        request: GenerationRequest,
        ids: list[int],
        cancel: threading.Event,
        push: Callable[[list[int] | None], None],
    ) -> _Result:
        """The thread: ``model.generate`` with a streaming hook and a cancel check."""
        with self._lock:
            self._waiting -= 1
            self._active += 1
        try:
            return self._generate_sync(request, ids, cancel, push)
        finally:
            with self._lock:
                self._active -= 1
            push(None)

    def _generate_sync(
        self,
        request: GenerationRequest,
        ids: list[int],
        cancel: threading.Event,
        push: Callable[[list[int] | None], None],
    ) -> _Result:
        torch = self._torch
        if cancel.is_set():
            return _Result(len(ids), 0, CANCELLED)
        from transformers import StoppingCriteria, StoppingCriteriaList  # noqa: PLC0415
        from transformers.generation.streamers import BaseStreamer  # noqa: PLC0415

        class Streamer(BaseStreamer):
            def __init__(self) -> None:
                self.prompt_seen = False
                self.made = 0

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() hands over the prompt first
                    self.prompt_seen = True
                    return
                tokens = [int(t) for t in value.reshape(-1).tolist()]
                self.made += len(tokens)
                push(tokens)

            def end(self) -> None:
                pass

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full(
                    (input_ids.shape[0],),
                    cancel.is_set(),
                    dtype=torch.bool,
                    device=input_ids.device,
                )

        streamer = Streamer()
        sampling = request.sampling
        options: dict[str, Any] = {"max_new_tokens": request.remaining_tokens}
        if sampling.temperature > 0:
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            options["do_sample"] = False
        if sampling.stop:
            options.update(stop_strings=list(sampling.stop), tokenizer=self._tokenizer)
        if sampling.seed is not None:
            # torch's generator is process-wide: a seed makes a request
            # reproducible when it runs alone, not beside others.
            torch.manual_seed(sampling.seed)
        tok = self._tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        input_ids = torch.tensor([ids], dtype=torch.long, device=self._device)
        with torch.inference_mode():
            self._model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([Cancelled()]),
                pad_token_id=pad,
                **options,
            )
        if cancel.is_set():
            reason: FinishReason = CANCELLED
        elif streamer.made >= request.remaining_tokens:
            reason = LENGTH
        else:
            reason = STOP
        return _Result(len(ids), streamer.made, reason)

    async def cancel(self, request_id: str) -> bool:
        return await self._streams.cancel(request_id)

    async def signals(self) -> EngineSignals:
        decoder = self._decoder
        kv_usage = decoder.kv_usage() if decoder is not None else None
        with self._lock:
            return EngineSignals(queue_depth=self._waiting, running=self._active, kv_usage=kv_usage)
