"""The grpc.aio servicer of ``tidegate.v1.Inference``: protobuf in, runtime values through.

Each RPC authenticates the caller with the broker's key ring (the same keys,
the same metadata), turns the request into the runtime's values
(:mod:`scheduler.inference_wire`), calls the :class:`Runtime`, and answers.
:data:`STATUS_TABLE` is the one place an error becomes a status code; a
refusal also carries ``tidegate-refusal-reason`` and ``retry-after-ms`` in
the trailing metadata.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from grpc import aio

from broker.errors import BrokerError, InvalidArgument, PermissionDenied, Unauthenticated
from broker.proto import inference_pb2 as pb
from broker.tenancy import KeyRing, presented_key
from broker.wire import parse_or_mark, well_formed
from scheduler.errors import SchedulerError
from scheduler.inference_wire import (
    fleet_status,
    grant_frames,
    hello,
    request_status,
    stop_reason,
    submit_response,
    submit_spec,
    worker_input,
)
from scheduler.runtime import Runtime, WorkerSession
from scheduler.runtime.errors import (
    InvalidFieldError,
    RefusedError,
    RequestNotFoundError,
    RoleDeniedError,
    ServingError,
    ServingUnavailableError,
    TooMuchError,
    WrongStateError,
)
from scheduler.runtime.values import DrainingOut, GrantOut, RejectOut, SettledOut, StopOut
from scheduler.types import RefusalReason

__all__ = [
    "REFUSAL_REASON",
    "RETRY_AFTER_MS",
    "SERVICE_NAME",
    "STATUS_TABLE",
    "InferenceService",
    "add_inference_service",
    "status_of",
]

log = logging.getLogger("tidegate.scheduler")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
REFUSAL_REASON = "tidegate-refusal-reason"
RETRY_AFTER_MS = "retry-after-ms"

# The one table from error class to status code; the most specific class wins.
STATUS_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (RoleDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidFieldError, grpc.StatusCode.INVALID_ARGUMENT),
    (RequestNotFoundError, grpc.StatusCode.NOT_FOUND),
    (WrongStateError, grpc.StatusCode.FAILED_PRECONDITION),
    (RefusedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TooMuchError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServingUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (ServingError, grpc.StatusCode.INTERNAL),
    (SchedulerError, grpc.StatusCode.INTERNAL),
    (BrokerError, grpc.StatusCode.INTERNAL),
)
_BY_CLASS = dict(STATUS_TABLE)

Metadata = tuple[tuple[str, str], ...]
R = TypeVar("R")


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, Metadata]:
    """Status code, message and trailing metadata for an error (INTERNAL if unplanned)."""
    if isinstance(exc, RefusedError):
        refusal = exc.refusal
        retry_ms = math.ceil(refusal.retry_after_s * 1000)
        trailer = ((REFUSAL_REASON, refusal.reason), (RETRY_AFTER_MS, str(retry_ms)))
        if refusal.reason == RefusalReason.UNKNOWN_TENANT:
            return grpc.StatusCode.PERMISSION_DENIED, str(exc), trailer
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), trailer
    for cls in type(exc).__mro__:
        code = _BY_CLASS.get(cls)
        if code is not None and code is not grpc.StatusCode.INTERNAL:
            return code, str(exc), ()
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)", ()


def code_number(exc: BaseException) -> int:
    code: tuple[int, str] = status_of(exc)[0].value
    return code[0]


async def _fail(context: aio.ServicerContext[object, object], exc: BaseException) -> None:
    code, message, trailer = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("inference RPC failed", exc_info=exc)
    await context.abort(code, message, trailing_metadata=trailer)


class InferenceService:
    """``tidegate.v1.Inference`` over a :class:`Runtime`."""

    def __init__(self, runtime: Runtime, keys: KeyRing) -> None:
        self.runtime = runtime
        self.keys = keys

    def tenant(self, context: aio.ServicerContext[object, object]) -> str:
        key, claimed = presented_key(context.invocation_metadata())
        return self.keys.authenticate(key, claimed)

    async def _unary(
        self, context: aio.ServicerContext[object, object], body: Callable[[str], Awaitable[R]]
    ) -> R:
        try:
            return await body(self.tenant(context))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _fail(context, exc)
        raise AssertionError("abort returns by raising")

    # ------------------------------------------------------------- clients

    async def Submit(  # noqa: N802 - the RPC's name
        self, request: pb.SubmitRequest, context: aio.ServicerContext[object, object]
    ) -> pb.SubmitResponse:
        async def body(tenant: str) -> pb.SubmitResponse:
            well_formed(request)
            submitted = await self.runtime.submit(tenant, submit_spec(request), request.payload)
            return submit_response(submitted)

        return await self._unary(context, body)

    async def SubmitStream(  # noqa: N802 - the RPC's name
        self,
        request_iterator: AsyncIterator[pb.SubmitFrame],
        context: aio.ServicerContext[object, object],
    ) -> pb.SubmitResponse:
        async def body(tenant: str) -> pb.SubmitResponse:
            frames = aiter(request_iterator)
            first = await anext(frames, None)
            if first is None or not well_formed(first).HasField("open"):
                raise InvalidFieldError("the first frame of a SubmitStream must be `open`")
            opening = first.open
            submitted = await self.runtime.submit(
                tenant, submit_spec(opening), opening.payload, _payload(frames)
            )
            return submit_response(submitted)

        return await self._unary(context, body)

    async def Cancel(  # noqa: N802 - the RPC's name
        self, request: pb.CancelRequest, context: aio.ServicerContext[object, object]
    ) -> pb.CancelResponse:
        async def body(tenant: str) -> pb.CancelResponse:
            well_formed(request)
            cancelled, view = await self.runtime.cancel(tenant, request.request_id)
            return pb.CancelResponse(cancelled=cancelled, status=request_status(view))

        return await self._unary(context, body)

    async def Status(  # noqa: N802 - the RPC's name
        self, request: pb.RequestStatusRequest, context: aio.ServicerContext[object, object]
    ) -> pb.RequestStatus:
        async def body(tenant: str) -> pb.RequestStatus:
            well_formed(request)
            return request_status(self.runtime.status(tenant, request.request_id))

        return await self._unary(context, body)

    # ------------------------------------------------------------- workers

    async def FleetStatus(  # noqa: N802 - the RPC's name
        self, request: pb.FleetStatusRequest, context: aio.ServicerContext[object, object]
    ) -> pb.FleetStatusResponse:
        async def body(tenant: str) -> pb.FleetStatusResponse:
            well_formed(request)
            return fleet_status(self.runtime.fleet_status(tenant))

        return await self._unary(context, body)

    async def Lease(  # noqa: N802 - the RPC's name
        self,
        request_iterator: AsyncIterator[pb.WorkerMessage],
        context: aio.ServicerContext[object, object],
    ) -> AsyncIterator[pb.ServerMessage]:
        runtime = self.runtime
        session = None
        reader: asyncio.Task[None] | None = None
        try:
            tenant = self.tenant(context)
            messages = aiter(request_iterator)
            first = await anext(messages, None)
            if first is None:
                return
            session = runtime.attach(tenant, hello(well_formed(first)))
            options = runtime.core.options
            yield pb.ServerMessage(
                opened=pb.LeaseOpened(
                    worker_id=session.hello.worker_id,
                    lease_s=session.lease_s,
                    server_epoch=runtime.epoch,
                    max_chunk_bytes=options.max_chunk_bytes,
                )
            )
            runtime.receive(session, worker_input(first, first=True))
            reader = asyncio.create_task(self._read(messages, session))
            while (item := await runtime.outgoing(session)) is not None:
                if isinstance(item, GrantOut):
                    async for frame in grant_frames(
                        item, inline_bytes=options.inline_bytes, piece_bytes=options.piece_bytes
                    ):
                        yield frame
                else:
                    yield _order(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _fail(context, exc)
        finally:
            if reader is not None:
                reader.cancel()
            if session is not None:
                runtime.detach(session)

    async def _read(
        self, messages: AsyncIterator[pb.WorkerMessage], session: WorkerSession
    ) -> None:
        """Apply the worker's messages until it closes its side (or sends a bad one)."""
        error: BaseException | None = None
        try:
            async for message in messages:
                self.runtime.receive(session, worker_input(well_formed(message)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        finally:
            self.runtime.detach(session, error)


def _order(item: StopOut | RejectOut | SettledOut | DrainingOut) -> pb.ServerMessage:
    if isinstance(item, DrainingOut):
        return pb.ServerMessage(draining=True)
    if isinstance(item, StopOut):
        return pb.ServerMessage(
            stops=[
                pb.Stop(
                    request_id=item.request_id,
                    lease_id=item.lease_id,
                    reason=stop_reason(item.reason),
                )
            ]
        )
    if isinstance(item, RejectOut):
        return pb.ServerMessage(
            rejected=[
                pb.Rejected(
                    request_id=item.request_id,
                    lease_id=item.lease_id,
                    code=code_number(item.error),
                    message=str(item.error),
                )
            ]
        )
    return pb.ServerMessage(
        settled=[pb.Settled(request_id=item.request_id, lease_id=item.lease_id)]
    )


async def _payload(frames: AsyncIterator[pb.SubmitFrame]) -> AsyncIterator[bytes]:
    async for frame in frames:
        kind = well_formed(frame).WhichOneof("frame")
        if kind != "payload":
            raise InvalidFieldError("after `open`, a SubmitStream carries only `payload` frames")
        yield frame.payload


def add_inference_service(service: InferenceService, server: aio.Server) -> None:
    """Register like the generated code does, with decoders that mark undecodable
    requests (answered INVALID_ARGUMENT) instead of raising."""
    handlers = {
        "Submit": grpc.unary_unary_rpc_method_handler(
            service.Submit,
            request_deserializer=parse_or_mark(pb.SubmitRequest),
            response_serializer=pb.SubmitResponse.SerializeToString,
        ),
        "SubmitStream": grpc.stream_unary_rpc_method_handler(
            service.SubmitStream,
            request_deserializer=parse_or_mark(pb.SubmitFrame),
            response_serializer=pb.SubmitResponse.SerializeToString,
        ),
        "Cancel": grpc.unary_unary_rpc_method_handler(
            service.Cancel,
            request_deserializer=parse_or_mark(pb.CancelRequest),
            response_serializer=pb.CancelResponse.SerializeToString,
        ),
        "Status": grpc.unary_unary_rpc_method_handler(
            service.Status,
            request_deserializer=parse_or_mark(pb.RequestStatusRequest),
            response_serializer=pb.RequestStatus.SerializeToString,
        ),
        "FleetStatus": grpc.unary_unary_rpc_method_handler(
            service.FleetStatus,
            request_deserializer=parse_or_mark(pb.FleetStatusRequest),
            response_serializer=pb.FleetStatusResponse.SerializeToString,
        ),
        "Lease": grpc.stream_stream_rpc_method_handler(
            service.Lease,
            request_deserializer=parse_or_mark(pb.WorkerMessage),
            response_serializer=pb.ServerMessage.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
