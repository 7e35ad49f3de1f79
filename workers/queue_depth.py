"""The server's queue depth, as the autoscaler reads it.

* :class:`FleetStatusDepth` — the default: the Inference API's FleetStatus
  call with the fleet's own key (``role: worker``), over an
  :class:`~tidegate.inference.InferenceClient` on a loop of its own (the
  autoscaler is synchronous); ``queued`` is every tenant's requests
  admitted and waiting.
* :class:`PrometheusQueueDepth` — the alternative for a server reached only
  through its Prometheus endpoint (``tidegate serve --metrics-port N``):
  the sum over tenants of the gauge ``tidegate_scheduler_queued`` (the
  scheduler's ``TENANT_QUEUED``), one HTTP GET per reading.
* :class:`FixedQueueDepth` — an in-memory one whose value a test sets.
* :func:`sum_series` — the sum over a series' label sets, pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import urllib.request
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from tidegate.client import InferenceClient, Retry
from tidegate.errors import TidegateError

__all__ = [
    "QUEUED_METRIC",
    "FixedQueueDepth",
    "FleetStatusDepth",
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
    Raises ``ValueError`` when the exposition does not mention ``name`` at all
    or cannot be parsed (prometheus_client's own parser reads it)."""
    total = 0.0
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name == name:
            seen = True
        for sample in family.samples:
            if sample.name == name and not math.isnan(sample.value):
                total += sample.value
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


class FleetStatusDepth:
    """Reads ``queued`` from the server's FleetStatus (a worker tenant's key).

    The client lives on an event loop in a thread of its own, started on the
    first reading; :meth:`close` ends both. A reading that fails (server
    away, wrong key) raises ``OSError`` naming why, within about
    ``timeout_s``: the autoscaler holds and tries again at its next step."""

    def __init__(self, server: str, api_key: str, *, timeout_s: float = 2.0) -> None:
        self.server = server
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.in_flight = 0  # of the last reading
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: InferenceClient | None = None

    def __repr__(self) -> str:
        return f"FleetStatusDepth({self.server!r})"

    def _started(self) -> tuple[asyncio.AbstractEventLoop, InferenceClient]:
        with self._lock:
            if self._loop is None or self._client is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="tidegate-fleet-status", daemon=True
                )
                thread.start()
                retry = Retry(initial_s=0.05, max_s=0.5, give_up_s=self.timeout_s)

                async def make() -> InferenceClient:
                    return InferenceClient(self.server, api_key=self._api_key, retry=retry)

                client = asyncio.run_coroutine_threadsafe(make(), loop).result(self.timeout_s)
                self._loop, self._thread, self._client = loop, thread, client
            return self._loop, self._client

    def read(self) -> float:
        loop, client = self._started()
        future = asyncio.run_coroutine_threadsafe(
            client.fleet_status(timeout_s=self.timeout_s), loop
        )
        try:
            found = future.result(self.timeout_s * 2 + 1.0)
        except TimeoutError:
            future.cancel()
            raise OSError(f"FleetStatus from {self.server}: no answer in time") from None
        except TidegateError as exc:
            raise OSError(str(exc)) from None
        self.in_flight = found.in_flight
        return float(found.queued)

    def close(self) -> None:
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = None
        if loop is None:
            return
        if client is not None:
            with contextlib.suppress(Exception):  # closing anyway
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(5.0)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5.0)
        loop.close()


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
