"""OpenTelemetry spans of each request's life in the server, linked to its worker's.

A :class:`RequestTracer` is a :class:`~scheduler.runtime.observer.RequestObserver`;
the composition root adds it only when tracing is on, so a server without
tracing neither imports OpenTelemetry nor pays for it. One trace per
request::

    tidegate.request                      admission .. the end (outcome)
    ├── tidegate.submit                   admission .. the submit record durable
    │   └── tidegate.admission            the policy's decision
    ├── tidegate.queue_wait               queued .. granted (again after a requeue)
    ├── tidegate.dispatch                 granted .. the run ends (worker, attempt)
    │   ├── tidegate.first_token          granted .. the worker's first token
    │   └── tidegate.worker.run           (the worker's span, in its process)
    └── tidegate.completion               completion reported .. its end stored

The dispatch span's context travels to the worker in the grant's
properties (W3C ``traceparent``/``tracestate``), so the worker's span is its
child. A client that puts its own ``traceparent`` in the submit's
properties gets the request's trace under its own span. Refused requests
get a ``tidegate.submit`` span with its ``tidegate.admission`` child,
marked as errors with the reason.

Times: the runtime's clock is monotonic; spans want the epoch, so each time
is shifted by ``epoch_offset_s`` (wall minus monotonic, taken once).
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from scheduler.runtime.values import State
from scheduler.types import Refusal, Request, WorkerFeedback

__all__ = ["RequestTracer"]

_PROPAGATOR = TraceContextTextMapPropagator()
_CONTEXT_KEYS = ("traceparent", "tracestate")


class _Spans:
    __slots__ = ("completion", "dispatch", "first_token", "queue", "root", "submit")

    def __init__(self, root: Span, submit: Span, queue: Span) -> None:
        self.root = root
        self.submit: Span | None = submit
        self.queue: Span | None = queue
        self.dispatch: Span | None = None
        self.first_token: Span | None = None
        self.completion: Span | None = None


class RequestTracer:
    """See the module docstring. ``tracer``: an OpenTelemetry tracer (SDK-backed)."""

    def __init__(self, tracer: Tracer, epoch_offset_s: float) -> None:
        self._tracer = tracer
        self._offset = epoch_offset_s
        self._live: dict[str, _Spans] = {}

    def _ns(self, t: float) -> int:
        return int((t + self._offset) * 1e9)

    def _start(
        self, name: str, parent: Context | Span | None, t: float, **attrs: str | int
    ) -> Span:
        context = trace.set_span_in_context(parent) if isinstance(parent, Span) else parent
        return self._tracer.start_span(
            name, context=context, start_time=self._ns(t), attributes=attrs
        )

    def _end(self, span: Span | None, t: float) -> None:
        if span is not None:
            span.end(end_time=self._ns(t))

    # ------------------------------------------------------------ observer

    def admitted(self, request: Request, properties: Mapping[str, str], decided: float) -> None:
        arrival = request.arrival_s
        root = self._tracer.start_span(
            "tidegate.request",
            context=_client_context(properties),
            kind=SpanKind.SERVER,
            start_time=self._ns(arrival),
            attributes={
                "tidegate.request_id": request.request_id,
                "tidegate.tenant": request.tenant,
                "tidegate.priority": request.priority,
            },
        )
        submit = self._start("tidegate.submit", root, arrival)
        admission = self._start("tidegate.admission", submit, arrival, outcome="admitted")
        self._end(admission, decided)
        self._live[request.request_id] = _Spans(
            root, submit, self._start("tidegate.queue_wait", root, decided)
        )

    def refused(self, request: Request, refusal: Refusal, properties: Mapping[str, str]) -> None:
        arrival = request.arrival_s
        submit = self._tracer.start_span(
            "tidegate.submit",
            context=_client_context(properties),
            kind=SpanKind.SERVER,
            start_time=self._ns(arrival),
            attributes={"tidegate.tenant": request.tenant, "tidegate.priority": request.priority},
        )
        admission = self._start(
            "tidegate.admission", submit, arrival, outcome="refused", reason=refusal.reason
        )
        for span in (admission, submit):
            span.set_status(Status(StatusCode.ERROR, f"refused: {refusal.reason}"))
            self._end(span, arrival)

    def stored(self, request_id: str, now: float) -> None:
        spans = self._live.get(request_id)
        if spans is not None:
            self._end(spans.submit, now)
            spans.submit = None

    def granted(self, request: Request, worker: str, attempt: int, now: float) -> None:
        spans = self._live.get(request.request_id)
        if spans is None:
            return  # restored after a restart: its trace began in the previous run
        self._end(spans.queue, now)
        spans.queue = None
        spans.dispatch = self._start(
            "tidegate.dispatch", spans.root, now, worker=worker, attempt=attempt
        )
        spans.first_token = self._start("tidegate.first_token", spans.dispatch, now)

    def carry(self, request_id: str, properties: Mapping[str, str]) -> Mapping[str, str]:
        spans = self._live.get(request_id)
        if spans is None or spans.dispatch is None:
            return properties
        carrier = {k: v for k, v in properties.items() if k not in _CONTEXT_KEYS}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(spans.dispatch))
        return carrier

    def first_token(self, request_id: str, worker: str, now: float) -> None:
        spans = self._live.get(request_id)
        if spans is not None:
            self._end(spans.first_token, now)
            spans.first_token = None

    def tokens(self, worker: str, count: int) -> None:
        pass

    def feedback(self, worker: str, feedback: WorkerFeedback, now: float) -> None:
        pass

    def requeued(self, request_id: str, worker: str, cause: str, now: float) -> None:
        spans = self._live.get(request_id)
        if spans is None:
            return
        self._end(spans.first_token, now)
        spans.first_token = None
        if spans.dispatch is not None:
            spans.dispatch.set_attribute("tidegate.requeued", cause)
            self._end(spans.dispatch, now)
            spans.dispatch = None
        spans.queue = self._start("tidegate.queue_wait", spans.root, now, after=cause)

    def completing(self, request_id: str, now: float) -> None:
        spans = self._live.get(request_id)
        if spans is not None:
            spans.completion = self._start("tidegate.completion", spans.root, now)

    def finished(self, request_id: str, outcome: str, now: float) -> None:
        spans = self._live.pop(request_id, None)
        if spans is None:
            return
        for span in (
            spans.completion,
            spans.first_token,
            spans.dispatch,
            spans.queue,
            spans.submit,
        ):
            self._end(span, now)  # whatever is still open ends with the request
        root = spans.root
        root.set_attribute("tidegate.outcome", outcome)
        if outcome == State.FAILED:
            root.set_status(Status(StatusCode.ERROR, "failed"))
        self._end(root, now)

    @property
    def live(self) -> int:
        """Requests with open spans (for tests: nothing may leak)."""
        return len(self._live)


def _client_context(properties: Mapping[str, str]) -> Context | None:
    """The client's trace context, when its submit carried one."""
    if "traceparent" not in properties:
        return None
    return _PROPAGATOR.extract(dict(properties))
