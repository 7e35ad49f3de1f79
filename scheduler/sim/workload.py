"""A seeded generator of bursty multi-tenant workloads, written as trace rows.

Each stream is one tenant at one priority: arrivals at ``rate_per_s``
(Poisson, or evenly spaced), multiplied by ``factor`` inside each burst
window, with prompt and output lengths drawn from log-normal distributions
given by their median and 99th percentile (what trace summaries quote).
The same seed gives the same rows, byte for byte once written.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Literal

from scheduler.sim.traces import TraceRow

__all__ = ["Burst", "Stream", "TokenDist", "WorkloadSpec", "generate"]

_Z99 = 2.3263478740408408  # standard normal quantile at 0.99


@dataclass(frozen=True, slots=True)
class TokenDist:
    """Log-normal token count; ``p99`` None means always ``median``."""

    median: float
    p99: float | None = None
    minimum: int = 1
    maximum: int | None = None

    def __post_init__(self) -> None:
        if self.median < 0 or (self.p99 is not None and not self.median > 0):
            raise ValueError(f"median: must be >= 0, and > 0 with a p99 (got {self.median})")
        if self.p99 is not None and self.p99 < self.median:
            raise ValueError(f"p99: must be >= median {self.median} (got {self.p99})")
        if self.maximum is not None and self.maximum < self.minimum:
            raise ValueError(f"maximum: must be >= minimum {self.minimum} (got {self.maximum})")

    def sample(self, rng: random.Random) -> int:
        if self.p99 is None or self.p99 == self.median:
            value = round(self.median)
        else:
            sigma = math.log(self.p99 / self.median) / _Z99
            value = round(self.median * math.exp(sigma * rng.gauss(0.0, 1.0)))
        value = max(self.minimum, value)
        return value if self.maximum is None else min(self.maximum, value)


@dataclass(frozen=True, slots=True)
class Burst:
    start_s: float
    duration_s: float
    factor: float

    def __post_init__(self) -> None:
        if self.start_s < 0 or not self.duration_s > 0 or self.factor < 0:
            raise ValueError(
                f"burst: needs start_s >= 0, duration_s > 0, factor >= 0 (got {self.start_s}, "
                f"{self.duration_s}, {self.factor})"
            )


@dataclass(frozen=True, slots=True)
class Stream:
    tenant: str
    rate_per_s: float
    input_tokens: TokenDist
    output_tokens: TokenDist
    priority: int = 0
    bursts: tuple[Burst, ...] = ()
    arrival: Literal["poisson", "uniform"] = "poisson"
    start_s: float = 0.0
    end_s: float | None = None  # None: the workload's duration
    sessions: int = 0  # 0: no session; n: one of n session ids, at random

    def __post_init__(self) -> None:
        if self.rate_per_s < 0:
            raise ValueError(f"rate_per_s: must be >= 0 (got {self.rate_per_s})")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    duration_s: float
    streams: tuple[Stream, ...]

    def __post_init__(self) -> None:
        if not self.duration_s > 0:
            raise ValueError(f"duration_s: must be > 0 (got {self.duration_s})")


def _segments(stream: Stream, duration_s: float) -> list[tuple[float, float, float]]:
    """(start, end, rate) pieces of constant rate; overlapping bursts multiply."""
    begin = stream.start_s
    end = duration_s if stream.end_s is None else min(stream.end_s, duration_s)
    cuts = {begin, end}
    for burst in stream.bursts:
        for t in (burst.start_s, burst.start_s + burst.duration_s):
            if begin < t < end:
                cuts.add(t)
    points = sorted(cuts)
    pieces = []
    for a, b in itertools.pairwise(points):
        rate = stream.rate_per_s
        for burst in stream.bursts:
            if burst.start_s <= a < burst.start_s + burst.duration_s:
                rate *= burst.factor
        pieces.append((a, b, rate))
    return pieces


def _arrivals(stream: Stream, duration_s: float, rng: random.Random) -> list[float]:
    times: list[float] = []
    phase = 1.0  # uniform: fraction of the current gap already elapsed (1: due now)
    for a, b, rate in _segments(stream, duration_s):
        if rate <= 0:
            continue
        gap = 1.0 / rate
        if stream.arrival == "uniform":
            t = a + (1.0 - phase) * gap
            while t < b:
                times.append(t)
                t += gap
            phase = 1.0 - (t - b) / gap
        else:
            # Memoryless, so restarting the draw at each cut is exact.
            t = a + rng.expovariate(rate)
            while t < b:
                times.append(t)
                t += rng.expovariate(rate)
    return times


def generate(spec: WorkloadSpec, seed: int) -> list[TraceRow]:
    """All streams' rows, merged by arrival (ties: stream order)."""
    rows: list[tuple[float, int, int, TraceRow]] = []
    for index, stream in enumerate(spec.streams):
        rng = random.Random(seed * 1_000_003 + index)
        for n, t in enumerate(_arrivals(stream, spec.duration_s, rng)):
            session = f"{stream.tenant}-{rng.randrange(stream.sessions)}" if stream.sessions else ""
            row = TraceRow(
                arrival_s=round(t, 6),
                tenant=stream.tenant,
                priority=stream.priority,
                input_tokens=stream.input_tokens.sample(rng),
                output_tokens=stream.output_tokens.sample(rng),
                session=session,
            )
            rows.append((row.arrival_s, index, n, row))
    rows.sort(key=lambda item: item[:3])
    return [item[3] for item in rows]
