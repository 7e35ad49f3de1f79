"""What a worker has to tell the server, gathered into as few messages as it takes.

Many requests run at once on one worker and each makes chunks; one Lease
message can carry all of them. Runs put their items here and wake the
sender; the sender takes everything gathered so far as one
:class:`~tidegate.client.WorkerReport` (the server applies a message's
parts in field order, which keeps each request's own order: its chunks
before its completion). A report is never larger than ``max_bytes`` of
chunk data, so a burst of output goes out in several messages rather than
one above the server's frame limit.

Pure apart from the :class:`asyncio.Event` that wakes the sender.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from tidegate.client import (
    Completion,
    Failed,
    FirstToken,
    LeaseFeedback,
    OutputChunk,
    Stopped,
    WorkerReport,
)

__all__ = ["Outbox"]


@dataclass(slots=True)
class _Parts:
    credits: int = 0
    feedback: LeaseFeedback | None = None
    chunks: list[OutputChunk] = field(default_factory=list)
    chunk_bytes: int = 0  # of the chunks' data
    first_tokens: list[FirstToken] = field(default_factory=list)
    stopped: list[Stopped] = field(default_factory=list)
    failed: list[Failed] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)


class Outbox:
    """Items waiting to be sent; :meth:`take` empties it into one report."""

    def __init__(self, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._parts = _Parts()
        self.wake = asyncio.Event()

    def __len__(self) -> int:
        p = self._parts
        return (
            (1 if p.credits else 0)
            + (1 if p.feedback is not None else 0)
            + len(p.chunks)
            + len(p.first_tokens)
            + len(p.stopped)
            + len(p.failed)
            + len(p.completions)
        )

    def clear(self) -> None:
        """Drop everything (the stream it was meant for is gone)."""
        self._parts = _Parts()
        self.wake.clear()

    def credit(self, count: int = 1) -> None:
        self._parts.credits += count
        self.wake.set()

    def feedback(self, feedback: LeaseFeedback) -> None:
        self._parts.feedback = feedback  # only the latest matters
        self.wake.set()

    def chunk(self, chunk: OutputChunk) -> None:
        parts = self._parts
        parts.chunks.append(chunk)
        parts.chunk_bytes += len(chunk.data)
        self.wake.set()

    def first_token(self, item: FirstToken) -> None:
        self._parts.first_tokens.append(item)
        self.wake.set()

    def stopped(self, item: Stopped) -> None:
        self._parts.stopped.append(item)
        self.wake.set()

    def failed(self, item: Failed) -> None:
        self._parts.failed.append(item)
        self.wake.set()

    def completion(self, item: Completion) -> None:
        self._parts.completions.append(item)
        self.wake.set()

    def take(self) -> WorkerReport | None:
        """Everything gathered (None if nothing), up to ``max_bytes`` of chunk data.

        When the chunks do not all fit, the rest stays for the next report,
        and so do the endings (stopped, failed, completions): an ending must
        not overtake its request's chunks.
        """
        parts = self._parts
        if not len(self):
            self.wake.clear()
            return None
        cut = len(parts.chunks)
        if parts.chunk_bytes > self.max_bytes:
            size = 0
            for i, chunk in enumerate(parts.chunks):
                size += len(chunk.data)
                if size > self.max_bytes and i > 0:
                    cut = i
                    break
        if cut < len(parts.chunks):
            report = WorkerReport(
                credits=parts.credits,
                feedback=parts.feedback,
                chunks=tuple(parts.chunks[:cut]),
                first_tokens=tuple(parts.first_tokens),
            )
            rest = parts.chunks[cut:]
            self._parts = _Parts(
                chunks=rest,
                chunk_bytes=sum(len(chunk.data) for chunk in rest),
                stopped=parts.stopped,
                failed=parts.failed,
                completions=parts.completions,
            )
            self.wake.set()  # more to send at once
            return report
        self._parts = _Parts()
        self.wake.clear()
        return WorkerReport(
            credits=parts.credits,
            feedback=parts.feedback,
            chunks=tuple(parts.chunks),
            first_tokens=tuple(parts.first_tokens),
            stopped=tuple(parts.stopped),
            failed=tuple(parts.failed),
            completions=tuple(parts.completions),
        )
