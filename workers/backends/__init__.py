"""Inference backends behind one async streaming interface (see :mod:`.base`).

The heavy ones (in-process transformers, in-process vLLM) import their
frameworks only when built, so importing this package stays cheap.
"""

from workers.backends.base import (
    CANCELLED,
    LENGTH,
    STOP,
    Backend,
    ChatMessage,
    Chunk,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    Prompt,
    SamplingParams,
    collect,
)

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
