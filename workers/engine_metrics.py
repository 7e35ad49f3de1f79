"""Engine signals scraped from an inference engine's Prometheus ``/metrics``.

An engine knows two things a GPU probe cannot: how many requests wait in its
own queue, and how full its KV cache is. vLLM exports them as
``vllm:num_requests_waiting`` and ``vllm:kv_cache_usage_perc`` (a fraction
in [0, 1] despite the name; older releases called it
``vllm:gpu_cache_usage_perc``); SGLang and TGI have their own names. Which
names to read is an :class:`EngineMetricNames` value per engine.

Parsing is pure (text in, :class:`EngineSignals` out) and uses
prometheus_client's text parser. An engine with data parallelism exports
one series per engine: queue depths and running counts add up, KV usage
takes the fullest engine (the one that saturates first).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "SGLANG_METRICS",
    "TGI_METRICS",
    "VLLM_METRICS",
    "EngineMetricNames",
    "EngineSignals",
    "parse_engine_signals",
]


@dataclass(frozen=True, slots=True)
class EngineSignals:
    """What an engine says about its own load; None where it does not say.

    ``queue_depth``: requests waiting in the engine, not yet running.
    ``running``: requests in the running batch.
    ``kv_usage``: fraction of the KV cache in use, in [0, 1].
    """

    queue_depth: int | None = None
    running: int | None = None
    kv_usage: float | None = None

    def __post_init__(self) -> None:
        if self.queue_depth is not None and self.queue_depth < 0:
            raise ValueError(f"queue_depth must be >= 0 (got {self.queue_depth!r})")
        if self.running is not None and self.running < 0:
            raise ValueError(f"running must be >= 0 (got {self.running!r})")
        if self.kv_usage is not None and not 0.0 <= self.kv_usage <= 1.0:
            raise ValueError(f"kv_usage must be in [0, 1] (got {self.kv_usage!r})")


@dataclass(frozen=True, slots=True)
class EngineMetricNames:
    """Sample names that carry each signal, first match wins (newer names first)."""

    queue_depth: tuple[str, ...] = ()
    running: tuple[str, ...] = ()
    kv_usage: tuple[str, ...] = ()


VLLM_METRICS = EngineMetricNames(
    queue_depth=("vllm:num_requests_waiting",),
    running=("vllm:num_requests_running",),
    kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
)
SGLANG_METRICS = EngineMetricNames(
    queue_depth=("sglang:num_queue_reqs",),
    running=("sglang:num_running_reqs",),
    kv_usage=("sglang:token_usage",),
)
TGI_METRICS = EngineMetricNames(
    queue_depth=("tgi_queue_size",),
    running=("tgi_batch_current_size",),
)


def _values(
    samples: Mapping[str, list[tuple[Mapping[str, str], float]]],
    names: tuple[str, ...],
    model: str | None,
) -> list[float] | None:
    for name in names:
        found = samples.get(name)
        if found is None:
            continue
        picked = [
            value
            for labels, value in found
            if math.isfinite(value)  # a NaN gauge says nothing
            and (model is None or labels.get("model_name", model) == model)
        ]
        if picked:
            return picked
    return None


def parse_engine_signals(
    text: str, names: EngineMetricNames, *, model: str | None = None
) -> EngineSignals:
    """Read the signals named by ``names`` from Prometheus text exposition.

    ``model`` keeps only series whose ``model_name`` label equals it (series
    without the label always count): one engine may serve several models.
    Raises ValueError when the text is not Prometheus exposition format.
    """
    wanted = set(names.queue_depth + names.running + names.kv_usage)
    samples: dict[str, list[tuple[Mapping[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    queue = _values(samples, names.queue_depth, model)
    running = _values(samples, names.running, model)
    kv = _values(samples, names.kv_usage, model)
    return EngineSignals(
        queue_depth=None if queue is None else max(0, round(sum(queue))),
        running=None if running is None else max(0, round(sum(running))),
        kv_usage=None if kv is None else min(1.0, max(0.0, *kv)),
    )
