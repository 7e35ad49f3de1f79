"""Spans of a request's life in the runtime, and the worker's span under the dispatch."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from scheduler.runtime import ProgressIn, SubmitSpec, WorkerInput
from scheduler.runtime.errors import RefusedError
from scheduler.runtime.observer import NO_OBSERVER, Observers
from scheduler.tracing import RequestTracer
from scheduler.types import RateLimit
from tests.unit.runtime.support import (
    WALL_OFFSET,
    FakeWorker,
    advance,
    make_runtime,
    run,
    settle,
    tenants_config,
)
from tidegate.inference_values import LeaseGrant
from tidegate.tracing import TracingOptions, setup_tracing
from workers.tracing import NO_TRACING, OtelRunTracer, default_run_tracer

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        found.setdefault(span.name, []).append(span)
    return found


def test_a_request_is_one_trace_from_submit_to_completion(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = RequestTracer(provider.get_tracer("test"), WALL_OFFSET)

    async def body() -> tuple[dict[str, str], int]:
        runtime, _, clock = make_runtime()
        runtime.core.observer = Observers(NO_OBSERVER, tracer)
        await runtime.start()
        traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        await runtime.submit("acme", SubmitSpec(properties={"traceparent": traceparent}), b"q")
        await advance(clock, 0.5)
        worker = FakeWorker(runtime, "gpu-0")
        worker.credit(1)
        grant = await worker.grant()
        await advance(clock, 0.25)
        worker.chunks(grant, b"first")
        worker.send(WorkerInput(progress=(ProgressIn(grant.request_id, grant.lease_id),)))
        await advance(clock, 0.25)
        worker.complete(grant, output_tokens=3)
        await settle()
        await advance(clock, 0.1)
        await runtime.stop()
        return dict(grant.properties), tracer.live

    carried, live = run(body)
    assert live == 0
    named = _by_name(exporter.get_finished_spans())
    assert sorted(named) == [
        "tidegate.admission",
        "tidegate.completion",
        "tidegate.dispatch",
        "tidegate.first_token",
        "tidegate.queue_wait",
        "tidegate.request",
        "tidegate.submit",
    ]
    (root,) = named["tidegate.request"]
    assert f"{root.context.trace_id:032x}" == CLIENT_TRACE  # under the client's trace
    assert root.parent is not None
    assert f"{root.parent.span_id:016x}" == CLIENT_SPAN
    assert root.attributes is not None
    assert root.attributes["tidegate.outcome"] == "completed"
    (queue,) = named["tidegate.queue_wait"]
    assert queue.parent is not None
    assert queue.parent.span_id == root.context.span_id
    assert queue.end_time is not None
    assert queue.start_time is not None
    assert (queue.end_time - queue.start_time) / 1e9 == pytest.approx(0.5, abs=0.06)
    (dispatch,) = named["tidegate.dispatch"]
    (first,) = named["tidegate.first_token"]
    assert first.parent is not None
    assert first.parent.span_id == dispatch.context.span_id
    assert first.end_time is not None
    assert first.start_time is not None
    assert (first.end_time - first.start_time) / 1e9 == pytest.approx(0.25, abs=0.06)
    (admission,) = named["tidegate.admission"]
    (submit,) = named["tidegate.submit"]
    assert admission.parent is not None
    assert admission.parent.span_id == submit.context.span_id
    # The grant carried the dispatch span's context to the worker.
    context = TraceContextTextMapPropagator().extract(carried)
    parent = trace.get_current_span(context).get_span_context()
    assert parent.span_id == dispatch.context.span_id
    assert f"{parent.trace_id:032x}" == CLIENT_TRACE


def test_a_refusal_is_a_failed_submit_span(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = RequestTracer(provider.get_tracer("test"), WALL_OFFSET)

    async def body() -> None:
        runtime, _, _ = make_runtime(config=tenants_config(rate=RateLimit(requests_per_s=1.0)))
        runtime.core.observer = tracer
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"q")
        with pytest.raises(RefusedError):
            await runtime.submit("acme", SubmitSpec(), b"q")
        await runtime.stop()

    run(body)
    named = _by_name(exporter.get_finished_spans())
    refused = [
        s
        for s in named["tidegate.admission"]
        if s.attributes and s.attributes["outcome"] == "refused"
    ]
    assert len(refused) == 1
    assert refused[0].attributes is not None
    assert refused[0].attributes["reason"] == "rate_requests"
    assert not refused[0].status.is_ok
    assert tracer.live == 1  # the admitted one is still queued


def test_a_requeue_ends_the_dispatch_and_waits_again(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = RequestTracer(provider.get_tracer("test"), WALL_OFFSET)

    async def body() -> None:
        runtime, _, clock = make_runtime()
        runtime.core.observer = tracer
        await runtime.start()
        await runtime.submit("acme", SubmitSpec(), b"q")
        worker = FakeWorker(runtime, "gpu-0")
        worker.credit(1)
        await worker.grant()
        worker.close()  # the stream breaks: its lease is gone, the request waits again
        await settle()
        again = FakeWorker(runtime, "gpu-1")
        again.credit(1)
        grant = await again.grant()
        again.complete(grant)
        await advance(clock, 0.2)
        await runtime.stop()

    run(body)
    named = _by_name(exporter.get_finished_spans())
    assert len(named["tidegate.dispatch"]) == 2
    assert len(named["tidegate.queue_wait"]) == 2
    lost = [
        s
        for s in named["tidegate.dispatch"]
        if s.attributes and "tidegate.requeued" in s.attributes
    ]
    assert len(lost) == 1
    assert lost[0].attributes is not None
    assert lost[0].attributes["tidegate.requeued"] == "lease_expired"
    assert tracer.live == 0


def _grant(properties: dict[str, str]) -> LeaseGrant:
    return LeaseGrant(
        request_id="r1",
        lease_id=1,
        tenant="acme",
        priority=0,
        payload=b"",
        input_tokens=1,
        output_tokens=1,
        properties=properties,
        next_chunk=0,
        done_output_tokens=0,
        resume_output=b"",
        deadline_s=0.0,
        attempt=1,
        reply_topic="chatbot",
        reply_lite_topic="r1",
    )


def test_the_worker_run_continues_the_grant_s_context(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    carrier = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "user": "kept"}
    span = OtelRunTracer(provider.get_tracer("worker")).start(_grant(carrier), "gpu-0")
    span.first_token()
    span.end("completed")
    named = _by_name(exporter.get_finished_spans())
    (run_span,) = named["tidegate.worker.run"]
    (first,) = named["tidegate.worker.first_token"]
    assert f"{run_span.context.trace_id:032x}" == CLIENT_TRACE
    assert run_span.parent is not None
    assert f"{run_span.parent.span_id:016x}" == CLIENT_SPAN
    assert first.parent is not None
    assert first.parent.span_id == run_span.context.span_id
    assert run_span.attributes is not None
    assert run_span.attributes["tidegate.outcome"] == "completed"
    failed = OtelRunTracer(provider.get_tracer("worker")).start(_grant({}), "gpu-0")
    failed.end("failed", "the backend broke")
    assert not _by_name(exporter.get_finished_spans())["tidegate.worker.run"][1].status.is_ok


def test_tracing_is_off_unless_set_up() -> None:
    assert setup_tracing(TracingOptions()) is None
    # No SDK provider was made global in this process: workers trace nothing.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        assert default_run_tracer() is NO_TRACING
    span = NO_TRACING.start(_grant({}), "gpu-0")
    span.first_token()
    span.end("completed")
