"""Helpers the three runners share: bodies, send-time stamps, pacing, figures.

Pure except ``Deadline``, which reads the monotonic clock it is given.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from benchmarks.peers.results import Figure, Metric, System, Tier, percentile

__all__ = [
    "FANIN_BODY_BYTES",
    "TOPIC_BODY",
    "Deadline",
    "due",
    "latency_figures",
    "payload",
    "rate_figure",
    "sent_at",
    "stamped",
]

FANIN_BODY_BYTES = 64
TOPIC_BODY = b"0123456789abcdef"  # 16 bytes: one small message per session topic
_STAMP = struct.Struct("<d")


def payload(size: int) -> bytes:
    """A fixed, incompressible-enough body of ``size`` bytes (the same for every system)."""
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def stamped(sent: float, size: int = FANIN_BODY_BYTES) -> bytes:
    """A body of ``size`` bytes carrying the send time ``sent`` (epoch seconds)."""
    return _STAMP.pack(sent) + payload(size - _STAMP.size)


def sent_at(body: bytes) -> float:
    """The send time that ``stamped`` put in ``body``."""
    return float(_STAMP.unpack_from(body)[0])


def due(start: float, index: int, rate: float) -> float:
    """When message ``index`` of a paced run that began at ``start`` is due."""
    return start + index / rate


@dataclass(frozen=True, slots=True)
class Deadline:
    """A time bound on one step; ``clock`` is a monotonic clock in seconds."""

    at: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(clock() + seconds, clock)

    def left(self) -> float:
        return max(0.0, self.at - self.clock())

    def passed(self) -> bool:
        return self.clock() >= self.at


def rate_figure(
    system: System,
    metric: Metric,
    tier: Tier,
    *,
    done: int,
    planned: int,
    seconds: float,
    latencies_ms: list[float] | None = None,
    details: Mapping[str, float] | None = None,
) -> Figure:
    """A per-second figure over ``done`` operations in ``seconds``."""
    extra = dict(details or {})
    if latencies_ms:
        extra["p50_ms"] = round(percentile(latencies_ms, 50), 3)
        extra["p99_ms"] = round(percentile(latencies_ms, 99), 3)
    return Figure(
        system,
        metric,
        tier,
        value=round(done / seconds, 1) if seconds > 0 else 0.0,
        count=done,
        seconds=seconds,
        complete=done >= planned,
        details=extra,
    )


def latency_figures(
    system: System,
    tier: Tier,
    latencies_ms: list[float],
    *,
    planned: int,
    seconds: float,
    details: Mapping[str, float] | None = None,
) -> list[Figure]:
    """Fan-in p50 and p99 figures over the delivered messages' latencies."""
    extra = {"delivered": float(len(latencies_ms)), **(details or {})}
    return [
        Figure(
            system,
            metric,
            tier,
            value=round(percentile(latencies_ms, q), 3),
            count=len(latencies_ms),
            seconds=seconds,
            complete=len(latencies_ms) >= planned,
            details=extra,
        )
        for metric, q in ((Metric.FANIN_P50, 50), (Metric.FANIN_P99, 99))
    ]
