"""The inference API from Python: submit requests, read their replies, lease them as a worker.

::

    async with InferenceClient("127.0.0.1:7400", api_key=key) as client:
        submitted = await client.submit(b"tell me a story", SubmitOptions(session="s-1"))
        async for event in client.stream(submitted):
            if isinstance(event, ReplyChunk):
                print(event.data.decode(), end="")

A worker (a fleet tenant's key) opens a Lease stream instead::

    stream = await client.lease(WorkerHello("gpu-0", capacity=8), credits=8)

and a fleet's autoscaler asks how much is queued with the same key
(:meth:`InferenceClient.fleet_status`).

Submit, Cancel and Status are retried on UNAVAILABLE (one loop for all the
asyncio clients: :class:`~tidegate.aio.Retrying`). Submit is safe to retry
because every call carries an idempotency key — the caller's
(``SubmitOptions.idempotency_key``) or one made for the call — so a retry
after a lost answer gets the first request back instead of queueing it
twice. A refusal by admission raises
:class:`~tidegate.inference_values.Refused` with the server's reason and
retry-after. Replies are read over the broker API (:class:`AsyncClient`):
one subscription per client, shared by all the requests it watches
(:mod:`tidegate.replies`).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from types import TracebackType

from grpc import aio

from broker.proto import inference_pb2 as pb
from broker.proto import inference_pb2_grpc as pb_grpc
from tidegate import inference_wire as wire
from tidegate.aio import AsyncClient, Retrying
from tidegate.connect import Connection
from tidegate.errors import CallFailed
from tidegate.inference_values import (
    FleetStatus,
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

__all__ = ["REFUSAL_REASON", "RETRY_AFTER_MS", "InferenceClient", "new_idempotency_key"]

REFUSAL_REASON = "tidegate-refusal-reason"  # trailing metadata of a refusal
RETRY_AFTER_MS = "retry-after-ms"


def new_idempotency_key() -> str:
    """A fresh idempotency key (what :meth:`InferenceClient.submit` sends when given none)."""
    return f"sdk-{uuid.uuid4().hex}"


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
        self._retrying = Retrying(self._conn)

    def __repr__(self) -> str:
        return f"InferenceClient(server={self._conn.server!r}, closed={self._retrying.closed})"

    @property
    def server(self) -> str:
        return self._conn.server

    @property
    def retries(self) -> int:
        """Calls tried again after UNAVAILABLE (observability)."""
        return self._retrying.retries

    @property
    def _stub(self) -> pb_grpc.InferenceAsyncStub:
        self._retrying.check_open()
        if self._stub_ is None:
            self._channel = self._conn.aio_channel()
            self._stub_ = pb_grpc.InferenceStub(self._channel)
        return self._stub_

    @property
    def broker(self) -> AsyncClient:
        """The broker API on the same server with the same key (replies are read there)."""
        self._retrying.check_open()
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
        """Close the channel and the reply reader; a call waiting to retry ends now
        with ``ClientClosed``."""
        if self._retrying.closed:
            return
        self._retrying.close()
        if self._router is not None:
            await self._router.close()
        if self._broker is not None:
            await self._broker.close()
        if self._channel is not None:
            await self._channel.close(None)

    # --------------------------------------------------------------- calls

    async def submit(
        self,
        payload: bytes | str,
        options: SubmitOptions | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Submitted:
        """Submit one request; answered once the server has it on disk.

        Retried on UNAVAILABLE under one idempotency key (``options``' or a
        fresh one), so it runs once however many tries it took; ``timeout_s``
        bounds each try. ``Submitted.duplicate`` says the key named a request
        admitted before. Raises :class:`Refused` when admission says no
        (reason and retry-after attached), other ``CallFailed`` errors as
        their status says.
        """
        body = payload.encode() if isinstance(payload, str) else bytes(payload)
        chosen = options or SubmitOptions()
        key = None if chosen.idempotency_key else new_idempotency_key()
        request = wire.submit_request(body, chosen, key)
        response = await self._retrying.call(
            "Submit",
            lambda: self._stub.Submit(
                request, metadata=self._conn.metadata, timeout=timeout_s or self._conn.timeout_s
            ),
            failure=_refusal,
        )
        return wire.submitted(response)

    async def status(self, request_id: str) -> RequestStatus:
        request = pb.RequestStatusRequest(request_id=request_id)
        response = await self._retrying.call(
            "Status",
            lambda: self._stub.Status(
                request, metadata=self._conn.metadata, timeout=self._conn.timeout_s
            ),
        )
        return wire.request_status(response)

    async def cancel(self, request_id: str) -> tuple[bool, RequestStatus]:
        """Stop a request; (False, its final status) when it had already finished."""
        request = pb.CancelRequest(request_id=request_id)
        response = await self._retrying.call(
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

    async def fleet_status(self, *, timeout_s: float | None = None) -> FleetStatus:
        """Requests queued and in flight on the server, in all, per priority band
        and per tenant (a worker tenant's key; a client's is PermissionDenied).
        Retried on UNAVAILABLE like Status; ``timeout_s`` bounds each try."""
        request = pb.FleetStatusRequest()
        response = await self._retrying.call(
            "FleetStatus",
            lambda: self._stub.FleetStatus(
                request, metadata=self._conn.metadata, timeout=timeout_s or self._conn.timeout_s
            ),
        )
        return wire.fleet_status(response)

    async def lease(self, hello: WorkerHello, *, credits: int) -> LeaseStream:
        """Open a Lease stream (a worker tenant's key) with ``credits`` to start."""
        call = self._stub.Lease(None, metadata=self._conn.metadata)
        return await LeaseStream.open(call, wire.hello_message(hello, credits), self._conn.server)
