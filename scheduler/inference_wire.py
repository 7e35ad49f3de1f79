"""Protobuf <-> runtime values for the Inference servicer (protobuf goes no further).

Used by :mod:`scheduler.service` only. Validation that needs no state
happens here (presence, ranges of the wire types); the runtime checks the
rest and names the field either way.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator

from broker.proto import inference_pb2 as pb
from scheduler.runtime.errors import InvalidFieldError, WrongStateError
from scheduler.runtime.values import (
    ChunkIn,
    CompletionIn,
    FailedIn,
    FleetView,
    GrantOut,
    HeldLease,
    ProgressIn,
    RequestView,
    State,
    StoppedIn,
    StopReason,
    SubmitSpec,
    Submitted,
    WorkerHello,
    WorkerInput,
)
from scheduler.types import WorkerFeedback

__all__ = [
    "fleet_status",
    "grant_frames",
    "hello",
    "request_status",
    "stop_reason",
    "submit_response",
    "submit_spec",
    "worker_input",
]

_STATES = {
    State.QUEUED: pb.RequestStatus.QUEUED,
    State.RUNNING: pb.RequestStatus.RUNNING,
    State.COMPLETED: pb.RequestStatus.COMPLETED,
    State.CANCELLED: pb.RequestStatus.CANCELLED,
    State.DROPPED: pb.RequestStatus.DROPPED,
    State.FAILED: pb.RequestStatus.FAILED,
}
_REASONS = {StopReason.PREEMPT: pb.Stop.PREEMPT, StopReason.CANCEL: pb.Stop.CANCEL}


def submit_spec(request: pb.SubmitRequest) -> SubmitSpec:
    return SubmitSpec(
        priority=request.priority,
        session=request.session_id,
        input_tokens=request.input_tokens,
        output_tokens=request.output_tokens,
        deadline_s=request.deadline_s,
        reply_topic=request.reply_topic,
        properties=dict(request.properties),
        idempotency_key=request.idempotency_key,
    )


def submit_response(submitted: Submitted) -> pb.SubmitResponse:
    return pb.SubmitResponse(
        request_id=submitted.request_id,
        reply_topic=submitted.reply_topic,
        reply_lite_topic=submitted.reply_lite_topic,
        reply_offset=submitted.reply_offset,
        priority=submitted.priority,
        admitted_at=submitted.admitted_at,
        duplicate=submitted.duplicate,
    )


def request_status(view: RequestView) -> pb.RequestStatus:
    return pb.RequestStatus(
        request_id=view.request_id,
        state=_STATES[view.state],
        priority=view.priority,
        reply_topic=view.reply_topic,
        reply_lite_topic=view.reply_lite_topic,
        reply_offset=view.reply_offset,
        chunks=view.chunks,
        attempts=view.attempts,
        worker_id=view.worker_id,
        input_tokens=min(view.input_tokens, 2**32 - 1),
        output_tokens=min(view.output_tokens, 2**32 - 1),
        reason=view.reason,
        admitted_at=view.admitted_at,
    )


def hello(message: pb.WorkerMessage) -> WorkerHello:
    """The hello of a Lease stream's first message."""
    if not message.HasField("hello"):
        raise WrongStateError("the first message of a Lease stream must carry `hello`")
    message_hello = message.hello
    lease_s = message_hello.lease_s
    if not (math.isfinite(lease_s) and lease_s >= 0):
        raise InvalidFieldError(f"hello.lease_s is {lease_s!r}; it must be a finite number >= 0")
    return WorkerHello(
        worker_id=message_hello.worker_id,
        capacity=message_hello.capacity,
        backend=message_hello.backend,
        labels=dict(message_hello.labels),
        lease_s=lease_s,
        held=tuple(HeldLease(h.request_id, h.lease_id) for h in message_hello.held),
        keeps_leases=message_hello.keeps_leases,
    )


def _fraction(where: str, value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InvalidFieldError(f"{where} is {value!r}; it must be in [0, 1]")
    return value


def _seconds(where: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise InvalidFieldError(f"{where} is {value!r}; it must be a finite number >= 0")
    return value


def _feedback(message: pb.Feedback) -> WorkerFeedback:
    has = message.HasField
    return WorkerFeedback(
        ttft_s=_seconds("feedback.ttft_s", message.ttft_s) if has("ttft_s") else None,
        tpot_s=_seconds("feedback.tpot_s", message.tpot_s) if has("tpot_s") else None,
        queue_depth=message.queue_depth if has("queue_depth") else None,
        kv_usage=_fraction("feedback.kv_usage", message.kv_usage) if has("kv_usage") else None,
        gpu_util=_fraction("feedback.gpu_util", message.gpu_util) if has("gpu_util") else None,
        gpu_mem=_fraction("feedback.gpu_mem", message.gpu_mem) if has("gpu_mem") else None,
    )


def worker_input(message: pb.WorkerMessage, *, first: bool = False) -> WorkerInput:
    """The runtime's view of one worker message (``first``: the hello is allowed)."""
    if message.HasField("hello") and not first:
        raise WrongStateError("hello: only the first message of a Lease stream may carry it")
    return WorkerInput(
        credits=message.credits,
        feedback=_feedback(message.feedback) if message.HasField("feedback") else None,
        chunks=tuple(
            ChunkIn(c.request_id, c.lease_id, c.index, c.data, c.tokens) for c in message.chunks
        ),
        progress=tuple(
            ProgressIn(p.request_id, p.lease_id, p.first_token) for p in message.progress
        ),
        stopped=tuple(
            StoppedIn(
                s.request_id,
                s.lease_id,
                s.done_output_tokens,
                s.input_processed if s.HasField("input_processed") else None,
            )
            for s in message.stopped
        ),
        failed=tuple(
            FailedIn(f.request_id, f.lease_id, f.message, f.retryable) for f in message.failed
        ),
        completions=tuple(
            CompletionIn(c.request_id, c.lease_id, c.input_tokens, c.output_tokens, c.finish_reason)
            for c in message.completions
        ),
        draining=message.draining,
        leaving=message.leaving,
    )


def fleet_status(view: FleetView) -> pb.FleetStatusResponse:
    return pb.FleetStatusResponse(
        queued=view.queued,
        in_flight=view.in_flight,
        bands=[
            pb.BandLoad(priority=band, queued=queued, in_flight=in_flight)
            for band, (queued, in_flight) in view.bands.items()
        ],
        tenants=[
            pb.TenantLoad(tenant=name, queued=queued, in_flight=in_flight)
            for name, (queued, in_flight) in view.tenants.items()
        ],
        workers=view.workers,
        draining_workers=view.draining_workers,
    )


def stop_reason(reason: str) -> pb.Stop.Reason.ValueType:
    return _REASONS[reason]


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def grant_frames(
    grant: GrantOut, *, inline_bytes: int, piece_bytes: int
) -> AsyncIterator[pb.ServerMessage]:
    """The grant's frame, then its payload and resume pieces when they do not fit."""
    payload_inline = grant.payload is not None and len(grant.payload) <= inline_bytes
    resume_inline = len(grant.resume_output) <= inline_bytes
    message = pb.Grant(
        request_id=grant.request_id,
        lease_id=grant.lease_id,
        tenant=grant.tenant,
        priority=grant.priority,
        payload=grant.payload if payload_inline and grant.payload is not None else b"",
        payload_size=grant.payload_size,
        payload_chunked=not payload_inline,
        input_tokens=grant.input_tokens,
        output_tokens=grant.output_tokens,
        properties=dict(grant.properties),
        next_chunk=grant.next_chunk,
        done_output_tokens=grant.done_output_tokens,
        resume_output=grant.resume_output if resume_inline else b"",
        resume_size=len(grant.resume_output),
        resume_chunked=not resume_inline,
        deadline_s=grant.deadline_s,
        attempt=grant.attempt,
        reply_topic=grant.reply_topic,
        reply_lite_topic=grant.reply_lite_topic,
    )
    yield pb.ServerMessage(grants=[message])
    rid, lease = grant.request_id, grant.lease_id
    if not payload_inline:
        pending: bytes | None = None
        if grant.payload is not None:
            source: AsyncIterator[bytes] = _aiter(_pieces(grant.payload, piece_bytes))
        else:
            assert grant.payload_pieces is not None
            source = grant.payload_pieces
        async for chunk in source:
            for piece in _pieces(chunk, piece_bytes):
                if pending is not None:
                    yield _piece(rid, lease, False, pending, last=False)
                pending = piece
        yield _piece(rid, lease, False, pending or b"", last=True)
    if not resume_inline:
        parts = list(_pieces(grant.resume_output, piece_bytes))
        for i, part in enumerate(parts):
            yield _piece(rid, lease, True, part, last=i == len(parts) - 1)


def _piece(rid: str, lease: int, resume: bool, data: bytes, *, last: bool) -> pb.ServerMessage:
    return pb.ServerMessage(
        piece=pb.GrantPiece(request_id=rid, lease_id=lease, resume=resume, data=data, last=last)
    )


async def _aiter(items: Iterator[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item
