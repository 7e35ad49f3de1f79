"""Continuous batching for the in-process transformers backend.

``model.generate`` in a thread per request (the backend's ``threads`` mode)
runs one sequence per forward pass and spends most of each step in Python:
on an H100 a 1B model served four requests at ~45 tokens/s in all with the
GPU ~20% busy (the GPU check, ``tests/support/gpu_check.py``). This mode
hands requests to transformers' continuous batching manager instead: one
background thread steps every running sequence together over a paged KV
cache, admitting new requests between steps, so a step costs about the
same for one sequence as for dozens.

The manager's public surface is what this module uses: ``add_request``
(streaming, with per-request sampling kwargs), ``register_result_handler``
(outputs delivered on the event loop), ``cancel_request``, ``start`` and
``stop``. Its sampling is chosen once per manager (``do_sample``), so the
manager samples and each request narrows it: greedy is ``top_k=1``, and
temperature, top-p and top-k (no limit: the vocabulary) ride per request.
A per-request seed cannot be honoured (one generator draws for the whole
batch). Stop strings are matched on the event loop, over the text already
decoded; a match cuts the text after the stop string and cancels the
request upstream.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from workers.backends.base import SamplingParams
from workers.errors import BackendFailedError

__all__ = ["BatchedDecoder", "DecodeStream", "StopScanner", "supports_continuous_batching"]

# Defaults the manager is built with. Each request passes all three, so the
# values only make transformers build the per-request processors (it builds
# a temperature warper only for a temperature other than 1, top-p only
# below 1, top-k only above 0).
_BUILD_TEMPERATURE: Final = 0.5
_BUILD_TOP_P: Final = 0.5
_READY_TIMEOUT_S: Final = 300.0


def supports_continuous_batching(model: Any) -> bool:
    """Whether this transformers model has the continuous batching manager."""
    return callable(getattr(model, "init_continuous_batching", None))


def _vocab_size(model: Any) -> int:
    vocab = getattr(model.config.get_text_config(), "vocab_size", None)
    return int(vocab) if vocab else 1 << 20


class StopScanner:
    """Finds the first stop string in text that arrives in pieces.

    Keeps the last ``max(len(stop)) - 1`` characters seen, so a stop string
    split across pieces is still found. :meth:`feed` returns the part of the
    piece to show (cut just after a stop string) and whether one was found.
    """

    __slots__ = ("_keep", "_stops", "_tail")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._keep = max((len(s) for s in self._stops), default=1) - 1
        self._tail = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        window = self._tail + text
        ends = [i + len(s) for s in self._stops if (i := window.find(s)) >= 0]
        if ends:
            # A match wholly inside the tail was found on an earlier piece,
            # so every match found now ends inside this piece.
            return window[len(self._tail) : min(ends)], True
        self._tail = window[len(window) - self._keep :] if self._keep else ""
        return text, False


class DecodeStream:
    """The token ids of one request as the manager makes them.

    Iterating yields each step's new ids; it ends when the request finishes
    and raises :class:`BackendFailedError` when the manager fails it.
    ``made`` counts the ids yielded. :meth:`cancel` stops it upstream.
    """

    def __init__(self, decoder: BatchedDecoder, key: str) -> None:
        self._decoder = decoder
        self.key = key
        self.made = 0
        self._seen = 0
        self._queue: asyncio.Queue[list[int] | BaseException | None] = asyncio.Queue()
        self._open = True

    def _deliver(self, output: Any) -> None:
        """The manager's result handler (called on the event loop)."""
        if not self._open:
            return
        tokens = list(output.generated_tokens)
        if len(tokens) > self._seen:
            self._queue.put_nowait(tokens[self._seen :])
            self._seen = len(tokens)
        if output.error is not None:
            self._open = False
            self._queue.put_nowait(
                BackendFailedError(f"continuous batching failed: {output.error}")
            )
        elif output.is_finished():
            self._open = False
            self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[list[int]]:
        return self._tokens()

    async def _tokens(self) -> AsyncIterator[list[int]]:
        while (item := await self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            self.made += len(item)
            yield item

    def cancel(self) -> None:
        if self._open:
            self._open = False
            self._decoder.cancel(self.key)


class BatchedDecoder:
    """One continuous batching manager over ``model``, for one backend.

    :meth:`open` and :meth:`close` block (the manager allocates its cache and
    joins its thread): call them off the event loop. ``memory_fraction`` is
    the share of free accelerator memory the KV cache may take (None:
    transformers' default); ``cuda_graphs`` replays steps as CUDA graphs
    (None: transformers decides). The manager switches the model's attention
    to a paged implementation while it runs, so the model serves this
    decoder alone until :meth:`close` puts it back.
    """

    def __init__(self, model: Any, manager: Any) -> None:
        self._manager = manager
        self._keys = itertools.count()
        self._vocab = _vocab_size(model)

    @classmethod
    def open(
        cls, model: Any, *, memory_fraction: float | None = None, cuda_graphs: bool | None = None
    ) -> BatchedDecoder:
        # Heavy, optional: only where this mode is asked for.
        import transformers.generation.configuration_utils as module  # noqa: PLC0415

        configs: Any = module

        eos = model.generation_config.eos_token_id
        pad = model.generation_config.pad_token_id
        generation = configs.GenerationConfig(
            do_sample=True,
            temperature=_BUILD_TEMPERATURE,
            top_p=_BUILD_TOP_P,
            top_k=_vocab_size(model),
            eos_token_id=eos if eos is not None else -1,
            pad_token_id=pad if pad is not None else 0,
        )
        batching = configs.ContinuousBatchingConfig(
            max_memory_percent=memory_fraction,
            per_request_processors=True,
            use_cuda_graph=cuda_graphs,
        )
        manager = model.init_continuous_batching(
            generation_config=generation, continuous_batching_config=batching
        )
        manager.start()
        # The manager builds its cache in its own thread; wait for it, so
        # that a started backend is a ready one and a failure shows here.
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while manager.batch_processor is None:
            failure = manager.background_thread_status.fatal_error
            if failure is not None or not manager.is_running():
                raise BackendFailedError(f"continuous batching failed to start: {failure!r}")
            if time.monotonic() > deadline:
                manager.stop(block=False)
                raise BackendFailedError(
                    f"continuous batching not ready after {_READY_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.01)
        return cls(model, manager)

    def kv_usage(self) -> float | None:
        """The share of the paged KV cache in use, in [0, 1]; None where this
        transformers does not say. Read without a lock while the manager's
        thread changes it: a gauge, not an account."""
        processor = getattr(self._manager, "batch_processor", None)
        cache: Any = getattr(processor, "cache", None)
        if cache is None:
            return None
        try:
            if callable(getattr(cache, "compute_free_capacity", None)):  # transformers >= 5.2x
                free = float(cache.compute_free_capacity(relative=True))
            else:  # 5.17: counted in blocks
                free = cache.get_num_free_blocks() / cache.num_blocks
        except (AttributeError, TypeError, ValueError, ZeroDivisionError):
            return None
        return min(1.0, max(0.0, 1.0 - free))

    def close(self, timeout_s: float = 10.0) -> None:
        self._manager.stop(block=True, timeout=timeout_s)

    def submit(self, ids: list[int], max_new_tokens: int, sampling: SamplingParams) -> DecodeStream:
        """Queue one request; call from the event loop that reads the stream."""
        stream = DecodeStream(self, f"cb-{next(self._keys)}")
        narrow: dict[str, float | int]
        if sampling.temperature > 0:
            narrow = {
                "temperature": float(sampling.temperature),
                "top_p": float(sampling.top_p),
                "top_k": self._vocab,
            }
        else:  # greedy: keep the most likely token only
            narrow = {"temperature": 1.0, "top_p": 1.0, "top_k": 1}
        self._manager.register_result_handler(stream.key, stream._deliver)
        try:
            added = self._manager.add_request(
                ids, request_id=stream.key, max_new_tokens=max_new_tokens, streaming=True, **narrow
            )
        except Exception:
            self._forget(stream.key)
            raise
        if added is None:  # the manager is stopping or failed, and says so in its log
            self._forget(stream.key)
            raise BackendFailedError("continuous batching is not accepting requests")
        return stream

    def cancel(self, key: str) -> None:
        self._manager.cancel_request(key)
        # A cancelled request gets no final output, so its handler would stay.
        self._forget(key)

    def _forget(self, key: str) -> None:
        router = self._manager.output_router
        with router._lock:
            router.result_handlers.pop(key, None)
