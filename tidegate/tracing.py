"""Turning OpenTelemetry tracing on for a process (``--tracing``), off by default.

Off, nothing is imported and the server and workers use their no-op
observers. On, an SDK ``TracerProvider`` becomes this process's global one
and exports spans with a batch processor:

* ``otlp``: OTLP over gRPC to ``endpoint`` (default: the exporter's own,
  ``$OTEL_EXPORTER_OTLP_ENDPOINT`` or localhost:4317), from the
  ``tracing`` extra (``pip install 'tidegate[tracing]'``);
* ``console``: one JSON object per span on stderr, for a quick look.

The server's spans (``scheduler.tracing``) and the workers' in the same
process (``workers.tracing``) come from the provider set up here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tidegate.errors import UsageError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["MODES", "TracingOptions", "setup_tracing"]

Mode = Literal["off", "otlp", "console"]
MODES: tuple[Mode, ...] = ("off", "otlp", "console")


@dataclass(frozen=True, slots=True)
class TracingOptions:
    mode: Mode = "off"
    endpoint: str | None = None  # OTLP/gRPC, e.g. http://collector:4317
    service_name: str = "tidegate"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"--tracing {self.mode!r}: expected one of {', '.join(MODES)}")


def setup_tracing(
    options: TracingOptions, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Make an SDK provider this process's global one; None when tracing is off.

    ``exporter`` replaces the one ``options.mode`` names (tests pass an
    in-memory one). Call ``shutdown()`` on the result before exiting, so the
    last spans are flushed.
    """
    if options.mode == "off" and exporter is None:
        return None
    try:
        from opentelemetry import trace  # noqa: PLC0415 - only when tracing is on
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            f"--tracing {options.mode}: OpenTelemetry is not installed; "
            "pip install 'tidegate[tracing]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": options.service_name}))
    provider.add_span_processor(BatchSpanProcessor(exporter or _exporter(options)))
    trace.set_tracer_provider(provider)
    return provider


def _exporter(options: TracingOptions) -> SpanExporter:
    if options.mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter(out=sys.stderr)
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
    except ImportError:
        raise UsageError(
            "--tracing otlp: the OTLP exporter is not installed; pip install 'tidegate[tracing]'"
        ) from None
    return OTLPSpanExporter(endpoint=options.endpoint)
