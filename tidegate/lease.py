"""A worker's Lease stream (``tidegate.v1.Inference/Lease``) as plain values.

::

    stream = await client.lease(WorkerHello("gpu-0", capacity=8), credits=8)
    while (order := await stream.receive()) is not None:
        ...                                    # LeaseGrant, LeaseStop, ...
        await stream.send(WorkerReport(chunks=(...,)))

:meth:`LeaseStream.receive` hands over one order at a time; a grant comes
whole, its payload and resume output joined from the ``piece`` frames that
follow it when they did not fit in one frame. :meth:`LeaseStream.send`
may be called from several tasks: grpc.aio takes one write at a time, so
writes are serialised here. A stream is not resumed: when it breaks, the
server releases its leases (or holds them lease_s for a worker whose hello
says ``keeps_leases``, until its next stream names them in ``held``), and
the worker opens a new one (see :mod:`workers.worker`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import grpc
from grpc import aio

from broker.proto import inference_pb2 as pb
from tidegate import inference_wire as wire
from tidegate.errors import CallFailed, FailedPrecondition, Unavailable, from_rpc_error
from tidegate.inference_values import LeaseOpened, LeaseOrder, WorkerReport

__all__ = ["LeaseStream"]

_Call = aio.StreamStreamCall[pb.WorkerMessage, pb.ServerMessage]


class LeaseStream:
    """One open Lease stream. Build it with ``InferenceClient.lease``."""

    def __init__(self, call: _Call, opened: LeaseOpened, server: str) -> None:
        self._call = call
        self.opened = opened
        self._server = server
        self._pending: deque[LeaseOrder] = deque()
        self._write_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"LeaseStream(worker_id={self.opened.worker_id!r}, closed={self._closed})"

    @classmethod
    async def open(cls, call: _Call, first: pb.WorkerMessage, server: str) -> LeaseStream:
        """Send the hello (with the first credits) and wait for ``opened``."""
        try:
            await call.write(first)
            frame = await call.read()
        except grpc.RpcError as exc:
            call.cancel()
            raise from_rpc_error(exc, method="Lease", server=server) from None
        except asyncio.CancelledError:
            call.cancel()  # given up (a worker whose kept runs' grace ended): end it now
            raise
        if not isinstance(frame, pb.ServerMessage) or not frame.HasField("opened"):
            call.cancel()
            raise Unavailable(f"Lease: the server {server} ended the stream before opening it")
        return cls(call, wire.opened(frame.opened), server)

    def _error(self, exc: grpc.RpcError) -> CallFailed:
        return from_rpc_error(exc, method="Lease", server=self._server)

    async def send(self, report: WorkerReport) -> None:
        """Write one report; raises a ``CallFailed`` when the stream is gone."""
        message = wire.worker_message(report)
        async with self._write_lock:
            if self._closed:
                raise FailedPrecondition("Lease: the stream is closed")
            try:
                await self._call.write(message)
            except grpc.RpcError as exc:
                raise self._error(exc) from None
            except asyncio.InvalidStateError:
                raise Unavailable(f"Lease: the stream to {self._server} has ended") from None

    async def receive(self) -> LeaseOrder | None:
        """The next order; None when the server ended the stream cleanly.

        Raises a ``CallFailed`` (``Unavailable`` when the server went away or is
        draining) when the stream broke.
        """
        while not self._pending:
            frame = await self._read()
            if frame is None:
                return None
            for g in frame.grants:
                payload, resume = g.payload, g.resume_output
                if g.payload_chunked:
                    payload = await self._pieces(g.request_id, resume=False)
                if g.resume_chunked:
                    resume = await self._pieces(g.request_id, resume=True)
                self._pending.append(wire.grant(g, payload, resume))
            self._pending.extend(wire.orders(frame))
        return self._pending.popleft()

    async def _read(self) -> pb.ServerMessage | None:
        try:
            frame = await self._call.read()
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        except asyncio.CancelledError:
            raise
        if not isinstance(frame, pb.ServerMessage):  # aio.EOF
            return None
        return frame

    async def _pieces(self, request_id: str, *, resume: bool) -> bytes:
        parts: list[bytes] = []
        while True:
            frame = await self._read()
            if frame is None:
                raise Unavailable(f"Lease: the stream ended inside the pieces of {request_id}")
            piece = frame.piece
            if not frame.HasField("piece") or piece.request_id != request_id:
                raise FailedPrecondition(
                    f"Lease: expected a piece of {request_id}'s {'resume' if resume else 'payload'}"
                )
            parts.append(piece.data)
            if piece.last:
                return b"".join(parts)

    async def close(self) -> None:
        """End the worker's side and the call. Idempotent."""
        if self._closed:
            return
        async with self._write_lock:
            self._closed = True
            with contextlib.suppress(grpc.RpcError, asyncio.InvalidStateError, TimeoutError):
                await asyncio.wait_for(self._call.done_writing(), 1.0)
        self._call.cancel()
