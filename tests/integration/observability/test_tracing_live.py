"""One trace across client, server and worker, over real gRPC.

The server (broker + Inference API, as ``tidegate serve`` assembles them)
and a worker on a simulated GPU run in this process, each with its own
tracer of one in-memory exporter; the trace context crosses the wire the
way it does between processes: in the submit's and the grant's properties.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from types import MappingProxyType

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from broker import Broker
from broker.hub import Hub
from broker.server import BrokerServer, ServerOptions
from broker.tenancy import KeyRing, Quotas
from scheduler.clock import MonotonicClock
from scheduler.metrics import SchedulerTelemetry
from scheduler.policy import create_policy
from scheduler.runtime import BrokerRequestStore, Runtime
from scheduler.serving import InferenceExtension
from scheduler.sim.fleet import FleetModel
from scheduler.tracing import RequestTracer
from scheduler.types import SchedulerConfig, TenantConfig
from tidegate.inference import InferenceClient
from tidegate.inference_values import ReplyEnd, SubmitOptions
from workers.backends.simulated import SimulatedBackend, SimulatedConfig
from workers.tracing import OtelRunTracer
from workers.worker import Worker, WorkerConfig

pytestmark = pytest.mark.integration
KEYS = {"acme": "trace-acme-key", "fleet": "trace-fleet-key"}


async def _one_traced_request(directory: Path, provider: TracerProvider) -> str:
    config = SchedulerConfig(tenants=MappingProxyType({"acme": TenantConfig("acme")}))
    ring = KeyRing.from_keys(KEYS)
    clock = MonotonicClock()

    def inference(hub: Hub) -> InferenceExtension:
        tracer = RequestTracer(provider.get_tracer("server"), time.time() - clock.now())
        telemetry = SchedulerTelemetry(tracer=tracer)
        runtime = Runtime(
            create_policy("tidegate", config, random.Random(1)),
            BrokerRequestStore(hub),
            config,
            clock=clock,
            wall=time.time,
            worker_tenants=frozenset({"fleet"}),
            observer=telemetry.observer,
        )
        return InferenceExtension(runtime, ring, telemetry=telemetry)

    with Broker.open(directory) as store:
        server = BrokerServer(
            store, ring, Quotas({}), ServerOptions(listen="127.0.0.1:0"), extensions=[inference]
        )
        port = await server.start()
        address = f"127.0.0.1:{port}"
        fleet = InferenceClient(address, api_key=KEYS["fleet"])
        client = InferenceClient(address, api_key=KEYS["acme"])
        model = FleetModel(decode_step_s=0.005, max_batch=2)
        worker = Worker(
            WorkerConfig("gpu-0", capacity=1, feedback_interval_s=0.2),
            SimulatedBackend(SimulatedConfig(model=model, worker_id="gpu-0"), clock),
            fleet.lease,
            clock=clock,
            tracer=OtelRunTracer(provider.get_tracer("worker")),
        )
        running = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(worker.connected.wait(), 20)
            with provider.get_tracer("client").start_as_current_span("client.ask") as span:
                carrier: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(carrier, set_span_in_context(span))
                submitted = await client.submit(
                    "hello", SubmitOptions(output_tokens=8, properties=carrier)
                )
                async with asyncio.timeout(20):
                    async for event in client.stream(submitted):
                        if isinstance(event, ReplyEnd):
                            break
            trace_id = f"{span.get_span_context().trace_id:032x}"
        finally:
            worker.stop()
            await running
            await client.close()
            await fleet.close()
            await server.stop()
    return trace_id


def test_the_worker_s_run_is_a_child_of_the_server_s_dispatch(tmp_path: Path) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = asyncio.run(_one_traced_request(tmp_path / "store", provider))
    provider.shutdown()

    spans = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    for name in (
        "client.ask",
        "tidegate.request",
        "tidegate.submit",
        "tidegate.admission",
        "tidegate.queue_wait",
        "tidegate.dispatch",
        "tidegate.first_token",
        "tidegate.completion",
        "tidegate.worker.run",
        "tidegate.worker.first_token",
    ):
        assert name in by_name, f"{name} missing from the trace: {sorted(by_name)}"
    (client_span,) = by_name["client.ask"]
    (request,) = by_name["tidegate.request"]
    (dispatch,) = by_name["tidegate.dispatch"]
    (run,) = by_name["tidegate.worker.run"]
    assert request.parent is not None
    assert request.parent.span_id == client_span.context.span_id
    assert dispatch.parent is not None
    assert dispatch.parent.span_id == request.context.span_id
    assert run.parent is not None
    assert run.parent.span_id == dispatch.context.span_id  # across the Lease stream
    assert run.attributes is not None
    assert run.attributes["tidegate.outcome"] == "completed"
    assert request.attributes is not None
    assert request.attributes["tidegate.outcome"] == "completed"
