"""The worker's span of each run, a child of the server's dispatch span.

The server puts its dispatch span's context in the grant's properties (W3C
``traceparent``); :class:`OtelRunTracer` continues it, so a request's trace
shows the server's queue wait and dispatch and, inside, the worker's run
with its first token. Off by default at no cost: :data:`NO_TRACING` does
nothing, and :func:`default_run_tracer` returns it unless the process set
up an OpenTelemetry SDK provider (``tidegate.tracing.setup_tracing``).
OpenTelemetry is imported only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from tidegate.client import LeaseGrant

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["NO_TRACING", "OtelRunTracer", "RunSpan", "RunTracer", "default_run_tracer"]


class RunSpan(Protocol):
    def first_token(self) -> None:
        """The run's first output went out."""

    def end(self, outcome: str, error: str = "") -> None:
        """The run is over: completed, preempted, cancelled, fenced, failed, abandoned."""


class RunTracer(Protocol):
    def start(self, grant: LeaseGrant, worker_id: str) -> RunSpan: ...


class _NoSpan:
    def first_token(self) -> None:
        pass

    def end(self, outcome: str, error: str = "") -> None:
        pass


class _NoTracing:
    _SPAN = _NoSpan()

    def start(self, grant: LeaseGrant, worker_id: str) -> RunSpan:
        return self._SPAN


NO_TRACING: RunTracer = _NoTracing()


class _OtelSpan:
    __slots__ = ("_first", "_run")

    def __init__(self, run: Span, first: Span) -> None:
        self._run = run
        self._first: Span | None = first

    def first_token(self) -> None:
        if self._first is not None:
            self._first.end()
            self._first = None
            self._run.add_event("first_token")

    def end(self, outcome: str, error: str = "") -> None:
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - only when tracing

        if self._first is not None:
            self._first.end()
            self._first = None
        self._run.set_attribute("tidegate.outcome", outcome)
        if error:
            self._run.set_status(Status(StatusCode.ERROR, error))
        self._run.end()


class OtelRunTracer:
    """Runs as OpenTelemetry spans of ``tracer``, under the grant's trace context."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        self._tracer = tracer
        self._propagator = TraceContextTextMapPropagator()

    def start(self, grant: LeaseGrant, worker_id: str) -> RunSpan:
        from opentelemetry import trace  # noqa: PLC0415 - only when tracing

        parent = self._propagator.extract(dict(grant.properties))
        run = self._tracer.start_span(
            "tidegate.worker.run",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "tidegate.request_id": grant.request_id,
                "tidegate.worker": worker_id,
                "tidegate.attempt": grant.attempt,
                "tidegate.tenant": grant.tenant,
            },
        )
        first = self._tracer.start_span(
            "tidegate.worker.first_token", context=trace.set_span_in_context(run)
        )
        return _OtelSpan(run, first)


def default_run_tracer() -> RunTracer:
    """OpenTelemetry spans when this process set up an SDK provider, else nothing."""
    try:
        from opentelemetry import trace  # noqa: PLC0415 - optional
    except ImportError:
        return NO_TRACING
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return NO_TRACING
    return OtelRunTracer(provider.get_tracer("tidegate.worker"))
