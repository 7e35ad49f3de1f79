"""The server's queue depth, as the autoscaler reads it.

The server has no RPC that tells a worker's key how much is queued (the
Inference API's Status is per request), so the depth is read from its
Prometheus endpoint (``tidegate serve --metrics-port N``): the sum over
tenants of the gauge ``tidegate_scheduler_queued`` (requests admitted and
waiting; the scheduler's ``TENANT_QUEUED``).

* :class:`PrometheusQueueDepth` — the real source: one HTTP GET per reading.
* :class:`FixedQueueDepth` — an in-memory one whose value a test sets.
* :func:`sum_series` — the text-format parsing, pure.
"""

from __future__ import annotations

import math
import threading
import urllib.request
from typing import Protocol

__all__ = [
    "QUEUED_METRIC",
    "FixedQueueDepth",
    "PrometheusQueueDepth",
    "QueueDepthSource",
    "metrics_url",
    "sum_series",
]

# scheduler.metric_names.TENANT_QUEUED.name (workers may not import the
# scheduler's metrics; a unit test holds the two equal).
QUEUED_METRIC = "tidegate_scheduler_queued"


class QueueDepthSource(Protocol):
    def read(self) -> float:
        """Requests waiting now; raises ``OSError`` or ``ValueError`` when it cannot tell."""
        ...


def sum_series(text: str, name: str) -> float:
    """The sum of every sample of the series ``name`` in a Prometheus text
    exposition (all label sets); 0 when its family is declared without samples.
    Raises ``ValueError`` when the exposition does not mention ``name`` at all."""
    total = 0.0
    seen = False
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP") and parts[2] == name:
                seen = True
            continue
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest.startswith("{"):
            close = rest.rfind("}")
            if close < 0:
                raise ValueError(f"a sample of {name} has no closing brace: {line!r}")
            rest = rest[close + 1 :]
        elif not rest.startswith((" ", "\t")):
            continue  # another series whose name starts with this one
        fields = rest.split()
        if not fields:
            raise ValueError(f"a sample of {name} has no value: {line!r}")
        value = float(fields[0])
        if math.isnan(value):
            continue
        total += value
        seen = True
    if not seen:
        raise ValueError(f"the metrics have no series {name}")
    return total


def metrics_url(text: str) -> str:
    """``HOST:PORT`` -> ``http://HOST:PORT/metrics``; a URL stays as it is."""
    if "://" in text:
        if not text.startswith(("http://", "https://")):
            raise ValueError(f"{text!r}: the server's metrics URL must be http:// or https://")
        return text
    if not text or text.startswith("/"):
        raise ValueError(f"{text!r} is not HOST:PORT or an http URL of the server's metrics")
    return f"http://{text}/metrics"


class PrometheusQueueDepth:
    """Reads ``metric`` (summed over its labels) from the server's ``/metrics``."""

    def __init__(self, url: str, *, metric: str = QUEUED_METRIC, timeout_s: float = 2.0) -> None:
        self.url = metrics_url(url)
        self.metric = metric
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"PrometheusQueueDepth({self.url!r}, metric={self.metric!r})"

    def read(self) -> float:
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:  # noqa: S310
            text = response.read().decode("utf-8", errors="replace")
        return sum_series(text, self.metric)


class FixedQueueDepth:
    """An in-memory source: reads what was last set (``None``: a failed reading)."""

    def __init__(self, value: float | None = 0.0) -> None:
        self._lock = threading.Lock()
        self._value = value

    def set(self, value: float | None) -> None:
        with self._lock:
            self._value = value

    def read(self) -> float:
        with self._lock:
            value = self._value
        if value is None:
            raise OSError("no queue depth (set to fail)")
        return value
