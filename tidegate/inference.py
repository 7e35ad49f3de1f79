"""The inference API from Python: submit requests, read their replies, lease them as a worker.

::

    async with InferenceClient("127.0.0.1:7400", api_key=key) as client:
        submitted = await client.submit(b"tell me a story", SubmitOptions(session="s-1"))
        async for event in client.stream(submitted):
            if isinstance(event, ReplyChunk):
                print(event.data.decode(), end="")

A worker (a fleet tenant's key) opens a Lease stream instead::

    stream = await client.lease(WorkerHello("gpu-0", capacity=8), credits=8)

Submit is not retried by the SDK (the server has no deduplication key for
it: a retry after a lost answer could queue the request twice); Cancel and
Status are, on UNAVAILABLE. A refusal by admission raises
:class:`~tidegate.inference_values.Refused` with the server's reason and
retry-after. Replies are read over the broker API (:class:`AsyncClient`):
one subscription per client, shared by all the requests it watches
(:mod:`tidegate.replies`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TypeVar

import grpc
from grpc import aio

from broker.proto import inference_pb2 as pb
from broker.proto import inference_pb2_grpc as pb_grpc
from tidegate import inference_wire as wire
from tidegate.aio import AsyncClient
from tidegate.connect import Connection
from tidegate.errors import CallFailed, ClientClosed, from_rpc_error
from tidegate.inference_values import (
    Refused,
    ReplyEvent,
    RequestStatus,
    SubmitOptions,
    Submitted,
    WorkerHello,
)
from tidegate.lease import LeaseStream
from tidegate.options import ApiKey, Retry, Tls
from tidegate.replies import ReplyRouter, ReplyWatch

__all__ = ["REFUSAL_REASON", "RETRY_AFTER_MS", "InferenceClient"]

REFUSAL_REASON = "tidegate-refusal-reason"  # trailing metadata of a refusal
RETRY_AFTER_MS = "retry-after-ms"

R = TypeVar("R")


def _refusal(exc: BaseException, error: CallFailed) -> CallFailed:
    """A refusal's reason and retry-after, when the trailer carries them."""
    trailer_of = getattr(exc, "trailing_metadata", None)
    trailer = trailer_of() if callable(trailer_of) else None
    values = {str(k): str(v) for k, v in (trailer or ())}
    reason = values.get(REFUSAL_REASON)
    if reason is None:
        return error
    try:
        retry_after_s = int(values.get(RETRY_AFTER_MS, "0")) / 1000.0
    except ValueError:
        retry_after_s = 0.0
    refused = Refused(str(error), reason=reason, retry_after_s=retry_after_s)
    refused.code = error.code
    return refused


class InferenceClient:
    """An asyncio client of ``tidegate.v1.Inference`` (arguments as :class:`AsyncClient`)."""

    def __init__(
        self,
        server: str,
        *,
        api_key: str | ApiKey | None = None,
        tenant: str | None = None,
        tls: Tls | None = None,
        retry: Retry | None = None,
        timeout_s: float = 30.0,
        rng: random.Random | None = None,
        reply_buffer: int = 2000,
    ) -> None:
        self._conn = Connection.make(
            server,
            api_key=api_key,
            tenant=tenant,
            tls=tls,
            retry=retry,
            timeout_s=timeout_s,
            producer_id=None,
            first_sequence=None,
            rng=rng,
        )
        self._api_key = ApiKey(api_key) if isinstance(api_key, str) else api_key
        self._tenant = tenant
        self._reply_buffer = reply_buffer
        self._channel: aio.Channel | None = None
        self._stub_: pb_grpc.InferenceAsyncStub | None = None
        self._broker: AsyncClient | None = None
        self._router: ReplyRouter | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"InferenceClient(server={self._conn.server!r}, closed={self._closed})"

    @property
    def server(self) -> str:
        return self._conn.server

    @property
    def _stub(self) -> pb_grpc.InferenceAsyncStub:
        if self._closed:
            raise ClientClosed(f"the client of {self._conn.server} is closed")
        if self._stub_ is None:
            self._channel = self._conn.aio_channel()
            self._stub_ = pb_grpc.InferenceStub(self._channel)
        return self._stub_

    @property
    def broker(self) -> AsyncClient:
        """The broker API on the same server with the same key (replies are read there)."""
        if self._closed:
            raise ClientClosed(f"the client of {self._conn.server} is closed")
        if self._broker is None:
            self._broker = AsyncClient(
                self._conn.server,
                api_key=self._api_key,
                tenant=self._tenant,
                tls=self._conn.tls,
                retry=self._conn.retry,
                timeout_s=self._conn.timeout_s,
            )
        return self._broker

    @property
    def router(self) -> ReplyRouter:
        if self._router is None:
            self._router = ReplyRouter(self.broker, buffer=self._reply_buffer)
        return self._router

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> InferenceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._router is not None:
            await self._router.close()
        if self._broker is not None:
            await self._broker.close()
        if self._channel is not None:
            await self._channel.close(None)

    # --------------------------------------------------------------- calls

    async def _retried(self, method: str, call: Callable[[], Awaitable[R]]) -> R:
        backoff = self._conn.retry.backoff(self._conn.rng)
        while True:
            try:
                return await call()
            except grpc.RpcError as exc:
                error = from_rpc_error(exc, method=method, server=self._conn.server)
            delay = backoff.failed(time.monotonic()) if error.retryable else None
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def submit(
        self,
        payload: bytes | str,
        options: SubmitOptions | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Submitted:
        """Submit one request; answered once the server has it on disk.

        Raises :class:`Refused` when admission says no (reason and retry-after
        attached), other ``CallFailed`` errors as their status says.
        """
        body = payload.encode() if isinstance(payload, str) else bytes(payload)
        request = wire.submit_request(body, options or SubmitOptions())
        try:
            response = await self._stub.Submit(
                request, metadata=self._conn.metadata, timeout=timeout_s or self._conn.timeout_s
            )
        except grpc.RpcError as exc:
            error = from_rpc_error(exc, method="Submit", server=self._conn.server)
            raise _refusal(exc, error) from None
        return wire.submitted(response)

    async def status(self, request_id: str) -> RequestStatus:
        request = pb.RequestStatusRequest(request_id=request_id)
        response = await self._retried(
            "Status",
            lambda: self._stub.Status(
                request, metadata=self._conn.metadata, timeout=self._conn.timeout_s
            ),
        )
        return wire.request_status(response)

    async def cancel(self, request_id: str) -> tuple[bool, RequestStatus]:
        """Stop a request; (False, its final status) when it had already finished."""
        request = pb.CancelRequest(request_id=request_id)
        response = await self._retried(
            "Cancel",
            lambda: self._stub.Cancel(
                request, metadata=self._conn.metadata, timeout=self._conn.timeout_s
            ),
        )
        return response.cancelled, wire.request_status(response.status)

    # ------------------------------------------------------------- replies

    async def watch(self, submitted: Submitted) -> ReplyWatch:
        """Start reading a request's reply; iterate the watch for its events."""
        return await self.router.watch(submitted)

    async def stream(self, submitted: Submitted) -> AsyncIterator[ReplyEvent]:
        """A request's reply: its chunks in order, then one ReplyEnd."""
        watch = await self.router.watch(submitted)
        async for event in watch:
            yield event

    # -------------------------------------------------------------- workers

    async def lease(self, hello: WorkerHello, *, credits: int) -> LeaseStream:
        """Open a Lease stream (a worker tenant's key) with ``credits`` to start."""
        call = self._stub.Lease(None, metadata=self._conn.metadata)
        return await LeaseStream.open(call, wire.hello_message(hello, credits), self._conn.server)
