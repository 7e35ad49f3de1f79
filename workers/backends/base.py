"""The one interface every inference backend implements, and its values.

A backend turns a :class:`GenerationRequest` into an async stream of
:class:`Chunk` values (text plus how many output tokens it carries) that
ends with exactly one :class:`Finished` (token usage and why it stopped).
The lease loop publishes the chunks to the request's lite-topic and reports
the usage to the scheduler; it never needs to know which engine ran.

Preemption and resume: a preempted request runs again with ``resume_text``
and ``resume_tokens`` set to the output already delivered. The backend
continues after that text and never emits it again, so the client's stream
has no duplicate; it makes at most ``max_tokens - resume_tokens`` new tokens.

Cancellation: :meth:`Backend.cancel` stops the upstream work (the engine
frees the sequence) and the request's stream ends with a ``Finished`` whose
reason is ``cancelled`` and whose counts say what was made. Closing the
stream early (``aclose`` on the iterator, or leaving the ``async for``) also
stops the upstream work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeAlias, runtime_checkable

from workers.engine_metrics import EngineSignals
from workers.errors import BackendFailedError

__all__ = [
    "CANCELLED",
    "LENGTH",
    "STOP",
    "Backend",
    "ChatMessage",
    "Chunk",
    "FinishReason",
    "Finished",
    "GenerationEvent",
    "GenerationRequest",
    "Prompt",
    "SamplingParams",
    "collect",
]

FinishReason: TypeAlias = Literal["stop", "length", "cancelled"]
STOP: Final = "stop"  # the model ended the sequence (end token or stop string)
LENGTH: Final = "length"  # max_tokens reached
CANCELLED: Final = "cancelled"  # cancel() or preemption stopped it


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str

    def __post_init__(self) -> None:
        if not self.role:
            raise ValueError("chat message role must not be empty")


Prompt: TypeAlias = str | tuple[ChatMessage, ...]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling settings; ``temperature == 0`` means greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (got {self.temperature!r})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p!r})")


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One request for a backend.

    ``prompt`` is plain text (a completion) or chat messages (the engine's
    chat template applies). ``priority`` is the scheduler's: higher runs
    first. ``input_tokens_hint`` is the submitter's estimate of the prompt's
    tokens, used where the backend cannot count (the simulated one).
    """

    request_id: str
    prompt: Prompt
    max_tokens: int
    priority: int = 0
    sampling: SamplingParams = field(default_factory=SamplingParams)
    resume_text: str = ""
    resume_tokens: int = 0
    input_tokens_hint: int | None = None
    tenant: str = ""

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must not be empty")
        if self.max_tokens < 1:
            raise ValueError(
                f"request {self.request_id}: max_tokens must be >= 1 (got {self.max_tokens!r})"
            )
        if not 0 <= self.resume_tokens <= self.max_tokens:
            raise ValueError(
                f"request {self.request_id}: resume_tokens must be in [0, max_tokens="
                f"{self.max_tokens}] (got {self.resume_tokens!r})"
            )
        if self.resume_text and not self.resume_tokens:
            raise ValueError(
                f"request {self.request_id}: resume_text given with resume_tokens=0; "
                "say how many tokens the resumed text holds"
            )
        if isinstance(self.prompt, tuple) and not self.prompt:
            raise ValueError(f"request {self.request_id}: chat prompt has no messages")
        if self.input_tokens_hint is not None and self.input_tokens_hint < 0:
            raise ValueError(
                f"request {self.request_id}: input_tokens_hint must be >= 0 "
                f"(got {self.input_tokens_hint!r})"
            )

    @property
    def is_chat(self) -> bool:
        return isinstance(self.prompt, tuple)

    @property
    def remaining_tokens(self) -> int:
        """Output tokens still to make in this run."""
        return self.max_tokens - self.resume_tokens


@dataclass(frozen=True, slots=True)
class Chunk:
    """Output text and how many output tokens made it.

    Backends that see tokens (in-process ones) count exactly. Over HTTP a
    chunk is one streamed delta, counted as one token: engines send one
    token per delta except where bytes of one character span several
    tokens. :class:`Finished` carries the engine's exact usage.
    """

    text: str
    tokens: int = 1


@dataclass(frozen=True, slots=True)
class Finished:
    """The end of a stream: usage of this run and why it stopped.

    ``output_tokens`` counts tokens made in this run only; a resumed request
    had ``resumed_tokens`` before it, and ``total_output_tokens`` adds both.
    """

    input_tokens: int
    output_tokens: int
    reason: FinishReason
    resumed_tokens: int = 0

    @property
    def total_output_tokens(self) -> int:
        return self.resumed_tokens + self.output_tokens


GenerationEvent: TypeAlias = Chunk | Finished


@runtime_checkable
class Backend(Protocol):
    """An inference engine behind one async streaming interface."""

    @property
    def name(self) -> str:
        """Short engine name for logs and metrics labels (``openai``, ``hf``...)."""
        ...

    async def start(self) -> None:
        """Load the model or check the engine is reachable. Idempotent."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream the request's output: chunks, then exactly one Finished.

        Raises :class:`workers.errors.BackendError` subclasses; a request id
        already running raises ``DuplicateRequestError``.
        """
        ...

    async def cancel(self, request_id: str) -> bool:
        """Stop a running request; False when it is not running here."""
        ...

    async def signals(self) -> EngineSignals:
        """The engine's own load signals, None where it has none."""
        ...

    async def aclose(self) -> None:
        """Stop every running request and release the engine. Idempotent."""
        ...


async def collect(stream: AsyncIterator[GenerationEvent]) -> tuple[list[Chunk], Finished]:
    """Drain a stream: its chunks, and its Finished (which must come last, once)."""
    chunks: list[Chunk] = []
    finished: Finished | None = None
    async for event in stream:
        if finished is not None:
            raise BackendFailedError(f"backend broke the stream contract: {event!r} after Finished")
        if isinstance(event, Finished):
            finished = event
        else:
            chunks.append(event)
    if finished is None:
        raise BackendFailedError("backend broke the stream contract: stream ended without Finished")
    return chunks, finished
