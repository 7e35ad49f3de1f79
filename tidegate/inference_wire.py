"""Protobuf <-> the inference API's SDK values. Internal to the SDK.

Only the generated code of the wire contract (``broker.proto.inference_pb2``)
is imported, as for the broker's API in :mod:`tidegate.wire`.
"""

from __future__ import annotations

from collections.abc import Mapping

from broker.proto import inference_pb2 as pb
from tidegate.errors import STATUS_NAMES
from tidegate.inference_values import (
    FleetStatus,
    LeaseDraining,
    LeaseGrant,
    LeaseOpened,
    LeaseRejected,
    LeaseSettled,
    LeaseStop,
    Load,
    ReplyChunk,
    ReplyEnd,
    ReplyEvent,
    RequestState,
    RequestStatus,
    StopKind,
    SubmitOptions,
    Submitted,
    WorkerHello,
    WorkerReport,
)

__all__ = [
    "END_EVENT",
    "PROP_CHUNK",
    "PROP_EVENT",
    "PROP_REQUEST",
    "fleet_status",
    "grant",
    "opened",
    "orders",
    "reply_event",
    "request_status",
    "submit_request",
    "submitted",
    "worker_message",
]

# Properties the server puts on every reply message (see inference.proto).
PROP_REQUEST = "tidegate.request"
PROP_CHUNK = "tidegate.chunk"
PROP_EVENT = "tidegate.event"
END_EVENT = "end"

_STATES = {
    pb.RequestStatus.QUEUED: RequestState.QUEUED,
    pb.RequestStatus.RUNNING: RequestState.RUNNING,
    pb.RequestStatus.COMPLETED: RequestState.COMPLETED,
    pb.RequestStatus.CANCELLED: RequestState.CANCELLED,
    pb.RequestStatus.DROPPED: RequestState.DROPPED,
    pb.RequestStatus.FAILED: RequestState.FAILED,
}
_STOPS: dict[int, StopKind] = {pb.Stop.PREEMPT: "preempt", pb.Stop.CANCEL: "cancel"}


def submit_request(
    payload: bytes, options: SubmitOptions, idempotency_key: str | None = None
) -> pb.SubmitRequest:
    """``idempotency_key``: the key to send when ``options`` names none."""
    request = pb.SubmitRequest(
        payload=payload,
        priority=options.priority,
        session_id=options.session,
        input_tokens=options.input_tokens,
        output_tokens=options.output_tokens,
        deadline_s=options.deadline_s,
        reply_topic=options.reply_topic,
        idempotency_key=options.idempotency_key or idempotency_key or "",
    )
    if options.properties:
        request.properties.update(options.properties)
    return request


def submitted(response: pb.SubmitResponse) -> Submitted:
    return Submitted(
        request_id=response.request_id,
        reply_topic=response.reply_topic,
        reply_lite_topic=response.reply_lite_topic,
        reply_offset=response.reply_offset,
        priority=response.priority,
        admitted_at=response.admitted_at,
        duplicate=response.duplicate,
    )


def request_status(status: pb.RequestStatus) -> RequestStatus:
    return RequestStatus(
        request_id=status.request_id,
        state=_STATES.get(status.state, RequestState.QUEUED),
        priority=status.priority,
        reply_topic=status.reply_topic,
        reply_lite_topic=status.reply_lite_topic,
        reply_offset=status.reply_offset,
        chunks=status.chunks,
        attempts=status.attempts,
        worker_id=status.worker_id,
        input_tokens=status.input_tokens,
        output_tokens=status.output_tokens,
        reason=status.reason,
        admitted_at=status.admitted_at,
    )


def _int(props: Mapping[str, str], key: str) -> int:
    try:
        return int(props.get(key, "0"))
    except ValueError:
        return 0


def reply_event(
    request_id: str, props: Mapping[str, str], body: bytes, offset: int
) -> ReplyEvent | None:
    """The event a reply message carries; None when it is not a reply message."""
    index = props.get(PROP_CHUNK)
    if index is None or not index.isdigit():
        return None
    if props.get(PROP_EVENT) == END_EVENT:
        return ReplyEnd(
            request_id=request_id,
            outcome=props.get("tidegate.outcome", ""),
            chunks=int(index),
            input_tokens=_int(props, "tidegate.input_tokens"),
            output_tokens=_int(props, "tidegate.output_tokens"),
            finish_reason=props.get("tidegate.finish_reason", ""),
            reason=props.get("tidegate.reason", ""),
        )
    return ReplyChunk(request_id, int(index), body, offset)


# ------------------------------------------------------------------ lease


def hello_message(hello: WorkerHello, credits: int) -> pb.WorkerMessage:
    message = pb.WorkerMessage(
        hello=pb.WorkerHello(
            worker_id=hello.worker_id,
            capacity=hello.capacity,
            backend=hello.backend,
            lease_s=hello.lease_s,
            held=[pb.HeldLease(request_id=h.request_id, lease_id=h.lease_id) for h in hello.held],
            keeps_leases=hello.keeps_leases,
        ),
        credits=credits,
    )
    if hello.labels:
        message.hello.labels.update(hello.labels)
    return message


def worker_message(report: WorkerReport) -> pb.WorkerMessage:
    message = pb.WorkerMessage(
        credits=report.credits, draining=report.draining, leaving=report.leaving
    )
    fb = report.feedback
    if fb is not None:
        feedback = message.feedback
        feedback.SetInParent()  # present even when every signal is unknown
        if fb.ttft_s is not None:
            feedback.ttft_s = fb.ttft_s
        if fb.tpot_s is not None:
            feedback.tpot_s = fb.tpot_s
        if fb.queue_depth is not None:
            feedback.queue_depth = fb.queue_depth
        if fb.kv_usage is not None:
            feedback.kv_usage = fb.kv_usage
        if fb.gpu_util is not None:
            feedback.gpu_util = fb.gpu_util
        if fb.gpu_mem is not None:
            feedback.gpu_mem = fb.gpu_mem
    message.chunks.extend(
        pb.OutputChunk(
            request_id=c.request_id,
            lease_id=c.lease_id,
            index=c.index,
            data=c.data,
            tokens=c.tokens,
        )
        for c in report.chunks
    )
    message.progress.extend(
        pb.Progress(request_id=p.request_id, lease_id=p.lease_id, first_token=True)
        for p in report.first_tokens
    )
    for s in report.stopped:
        stopped = pb.Stopped(
            request_id=s.request_id, lease_id=s.lease_id, done_output_tokens=s.done_output_tokens
        )
        if s.input_processed is not None:
            stopped.input_processed = s.input_processed
        message.stopped.append(stopped)
    message.failed.extend(
        pb.Failed(
            request_id=f.request_id, lease_id=f.lease_id, message=f.message, retryable=f.retryable
        )
        for f in report.failed
    )
    message.completions.extend(
        pb.Completion(
            request_id=c.request_id,
            lease_id=c.lease_id,
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            finish_reason=c.finish_reason,
        )
        for c in report.completions
    )
    return message


def fleet_status(message: pb.FleetStatusResponse) -> FleetStatus:
    return FleetStatus(
        queued=message.queued,
        in_flight=message.in_flight,
        bands={b.priority: Load(b.queued, b.in_flight) for b in message.bands},
        tenants={t.tenant: Load(t.queued, t.in_flight) for t in message.tenants},
        workers=message.workers,
        draining_workers=message.draining_workers,
    )


def opened(message: pb.LeaseOpened) -> LeaseOpened:
    return LeaseOpened(
        worker_id=message.worker_id,
        lease_s=message.lease_s,
        server_epoch=message.server_epoch,
        max_chunk_bytes=message.max_chunk_bytes,
    )


def grant(message: pb.Grant, payload: bytes, resume: bytes) -> LeaseGrant:
    """A grant with its payload and resume output (joined from pieces by the caller)."""
    return LeaseGrant(
        request_id=message.request_id,
        lease_id=message.lease_id,
        tenant=message.tenant,
        priority=message.priority,
        payload=payload,
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        properties=dict(message.properties),
        next_chunk=message.next_chunk,
        done_output_tokens=message.done_output_tokens,
        resume_output=resume,
        deadline_s=message.deadline_s,
        attempt=message.attempt,
        reply_topic=message.reply_topic,
        reply_lite_topic=message.reply_lite_topic,
    )


def _code_name(code: int) -> str:
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else "UNKNOWN"


def orders(
    frame: pb.ServerMessage,
) -> list[LeaseStop | LeaseRejected | LeaseSettled | LeaseDraining]:
    """The stops and notices of a frame (grants and pieces are read apart)."""
    out: list[LeaseStop | LeaseRejected | LeaseSettled | LeaseDraining] = [
        LeaseStop(s.request_id, s.lease_id, _STOPS.get(s.reason, "cancel")) for s in frame.stops
    ]
    out.extend(
        LeaseRejected(r.request_id, r.lease_id, _code_name(r.code), r.message)
        for r in frame.rejected
    )
    out.extend(LeaseSettled(s.request_id, s.lease_id) for s in frame.settled)
    if frame.draining:
        out.append(LeaseDraining())
    return out
