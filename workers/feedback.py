"""A worker's feedback report: GPU readings + engine signals + measured latency.

The scheduler's window controller (``scheduler.policy.window``) reads one
:class:`~scheduler.types.WorkerFeedback` per report. A worker assembles it
from three sources, each optional:

* the GPU probe's latest readings (utilisation, memory) — the busiest
  device speaks for a worker that owns several;
* the engine's own signals (queue depth, KV-cache use);
* latencies the worker measured on the streams it served, summarised by a
  :class:`LatencyTracker` since the previous report.

Pure: times are handed in, nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.types import WorkerFeedback
from workers.engine_metrics import EngineSignals
from workers.probe import GpuReading

__all__ = ["LatencySummary", "LatencyTracker", "build_feedback"]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency over one report interval; None where nothing was measured.

    ``ttft_s``: mean time to first token of the requests that got one, or
    the age of the oldest request still waiting for one when that is longer
    (a stalled engine must not read as "no news"). ``tpot_s``: time per
    output token after the first, over all streams (total gap / tokens).
    """

    ttft_s: float | None = None
    tpot_s: float | None = None
    first_tokens: int = 0
    tokens: int = 0


@dataclass(slots=True)
class _Stream:
    started_s: float
    last_s: float | None = None  # time of the latest chunk; None before the first


class LatencyTracker:
    """Measures time to first token and time per output token of the streams
    a worker serves. Call :meth:`summary` once per report: it resets."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._ttfts: list[float] = []
        self._gap_s = 0.0
        self._gap_tokens = 0

    @property
    def active(self) -> int:
        return len(self._streams)

    def started(self, request_id: str, now: float) -> None:
        """The request was handed to the engine at ``now``."""
        self._streams[request_id] = _Stream(now)

    def chunk(self, request_id: str, tokens: int, now: float) -> None:
        """A chunk of ``tokens`` output tokens arrived at ``now``."""
        stream = self._streams.get(request_id)
        if stream is None or tokens <= 0:
            return
        if stream.last_s is None:
            self._ttfts.append(now - stream.started_s)
            # The first chunk's extra tokens came with the first: no gap to measure.
        else:
            self._gap_s += now - stream.last_s
            self._gap_tokens += tokens
        stream.last_s = now

    def finished(self, request_id: str) -> None:
        """The request's stream ended (finished, cancelled or failed)."""
        self._streams.pop(request_id, None)

    def summary(self, now: float) -> LatencySummary:
        """What was measured since the previous summary; starts a new interval."""
        ttft = sum(self._ttfts) / len(self._ttfts) if self._ttfts else None
        waiting = [now - s.started_s for s in self._streams.values() if s.last_s is None]
        if waiting and (ttft is None or max(waiting) > ttft):
            ttft = max(waiting)
        tpot = self._gap_s / self._gap_tokens if self._gap_tokens else None
        summary = LatencySummary(
            ttft_s=ttft, tpot_s=tpot, first_tokens=len(self._ttfts), tokens=self._gap_tokens
        )
        self._ttfts.clear()
        self._gap_s = 0.0
        self._gap_tokens = 0
        return summary


def _busiest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def build_feedback(
    readings: Sequence[GpuReading] = (),
    signals: EngineSignals | None = None,
    latency: LatencySummary | None = None,
) -> WorkerFeedback:
    """One report for the scheduler from whatever this worker could measure."""
    signals = signals or EngineSignals()
    latency = latency or LatencySummary()
    return WorkerFeedback(
        ttft_s=latency.ttft_s,
        tpot_s=latency.tpot_s,
        queue_depth=signals.queue_depth,
        kv_usage=signals.kv_usage,
        gpu_util=_busiest([r.utilisation for r in readings]),
        gpu_mem=_busiest([r.memory_used for r in readings]),
    )
