"""A real ``tidegate serve`` with client and worker tenants, and raw-stub drivers for both sides.

No SDK here: a worker is a Lease stream driven by hand (:class:`RawWorker`),
a client reads its reply with Broker.Subscribe (:func:`read_reply`).
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import grpc

from broker.proto import broker_pb2 as bpb
from broker.proto import broker_pb2_grpc as bgrpc
from broker.proto import inference_pb2 as pb
from broker.proto import inference_pb2_grpc as pb_grpc
from tests.integration.server.streams import Stream, at
from tests.support.server import ServeProcess

KEYS = {"acme": "acme-key-1", "beta": "beta-key-2", "fleet": "fleet-key-3"}

BASE_CONFIG = """\
tenants:
  acme:
    api_key_env: TG_ACME
    max_priority: 2
  beta:
    api_key_env: TG_BETA
    rate:
      requests_per_s: 1
      burst_s: 1
  fleet:
    role: worker
    api_key_env: TG_FLEET
broker:
  fsync: {fsync}
  segment_bytes: 8388608
"""

FIXED_WINDOW = """\
scheduler:
  window:
    initial: 1
    minimum: 1
    maximum: 1
"""


def metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", KEYS[tenant]),)


@dataclass
class Server(ServeProcess):
    """One server process; ``stop``/``start`` keep the data directory (a restart)."""

    fsync: str = "interval"
    extra: str = ""
    args: tuple[str, ...] = ()

    def start(self) -> Server:
        self.launch(
            BASE_CONFIG.format(fsync=self.fsync) + self.extra,
            {"TG_ACME": KEYS["acme"], "TG_BETA": KEYS["beta"], "TG_FLEET": KEYS["fleet"]},
            args=self.args,
        )
        return self

    def inference(self) -> pb_grpc.InferenceStub:
        return pb_grpc.InferenceStub(self.channel())

    def broker(self) -> bgrpc.BrokerStub:
        return bgrpc.BrokerStub(self.channel())

    def stop(
        self, sig: int = signal.SIGTERM, timeout: float = 30.0, *, kill_late: bool = False
    ) -> int:
        # This suite hangs up before the signal (the shared stop signals
        # first): its workers' Lease streams end before the server is told
        # to go, which is the restart its tests were written against.
        self.close_channels()
        return super().stop(sig, timeout, kill_late=kill_late)


def submit(
    server: Server, tenant: str = "acme", payload: bytes = b"prompt", **fields: object
) -> pb.SubmitResponse:
    request = pb.SubmitRequest(payload=payload, **fields)  # type: ignore[arg-type]
    response: pb.SubmitResponse = server.inference().Submit(
        request, metadata=metadata(tenant), timeout=30
    )
    return response


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    details: str
    trailer: dict[str, str]


def failure(exc: BaseException) -> Failure:
    """Code, details and trailing metadata of a failed call."""
    call = cast(grpc.Call, exc)
    trailer = {str(k): str(v) for k, v in call.trailing_metadata() or ()}
    return Failure(call.code(), call.details() or "", trailer)


def status(server: Server, request_id: str, tenant: str = "acme") -> pb.RequestStatus:
    found: pb.RequestStatus = server.inference().Status(
        pb.RequestStatusRequest(request_id=request_id), metadata=metadata(tenant), timeout=10
    )
    return found


class RawWorker:
    """One Lease stream: messages out through a queue, frames in on a reader thread."""

    def __init__(
        self,
        server: Server,
        worker_id: str,
        *,
        credits: int = 4,
        lease_s: float = 0.0,
        tenant: str = "fleet",
        keeps_leases: bool = False,
        held: tuple[pb.Grant, ...] = (),
    ) -> None:
        """``keeps_leases``, ``held``: the hello's (the grants of the leases it names)."""
        self._out: queue.Queue[pb.WorkerMessage | None] = queue.Queue()
        self.frames: queue.Queue[pb.ServerMessage | BaseException | None] = queue.Queue()
        self._out.put(
            pb.WorkerMessage(
                hello=pb.WorkerHello(
                    worker_id=worker_id,
                    capacity=credits,
                    lease_s=lease_s,
                    keeps_leases=keeps_leases,
                    held=[pb.HeldLease(request_id=g.request_id, lease_id=g.lease_id) for g in held],
                ),
                credits=credits,
            )
        )
        self.call: Any = server.inference().Lease(self._messages(), metadata=metadata(tenant))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.pending: list[pb.ServerMessage] = []

    def _messages(self) -> Iterator[pb.WorkerMessage]:
        while True:
            item = self._out.get()
            if item is None:
                return
            yield item

    def _read(self) -> None:
        try:
            for frame in self.call:
                self.frames.put(frame)
            self.frames.put(None)
        except BaseException as exc:
            self.frames.put(exc)

    def send(self, message: pb.WorkerMessage) -> None:
        self._out.put(message)

    def next(self, timeout: float = 10.0) -> pb.ServerMessage:
        if self.pending:
            return self.pending.pop(0)
        item = self.frames.get(timeout=timeout)
        if item is None:
            raise EOFError("the Lease stream ended")
        if isinstance(item, BaseException):
            raise item
        return item

    def opened(self) -> pb.LeaseOpened:
        frame = self.next()
        assert frame.HasField("opened"), frame
        return frame.opened

    def expect(self, what: str, timeout: float = 10.0) -> pb.ServerMessage:
        """The next frame holding ``what`` (grants, stops, rejected, settled); others wait."""
        skipped: list[pb.ServerMessage] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                frame = self.next(max(0.01, deadline - time.monotonic()))
                if frame.HasField("opened"):
                    continue
                field_value = getattr(frame, what)
                if len(field_value):
                    return frame
                skipped.append(frame)
        finally:
            self.pending = skipped + self.pending

    def grant(self, timeout: float = 10.0) -> tuple[pb.Grant, bytes, bytes]:
        """The next grant with its whole payload and resume output (pieces joined)."""
        frame = self.expect("grants", timeout)
        grant = frame.grants[0]
        rest = list(frame.grants[1:])
        if rest:
            raise AssertionError("tests take one grant per frame")
        payload, resume = grant.payload, grant.resume_output
        if grant.payload_chunked:
            payload = self._pieces(resume_part=False)
        if grant.resume_chunked:
            resume = self._pieces(resume_part=True)
        return grant, payload, resume

    def _pieces(self, *, resume_part: bool) -> bytes:
        data = b""
        while True:
            frame = self.next()
            assert frame.HasField("piece"), frame
            assert frame.piece.resume == resume_part
            data += frame.piece.data
            if frame.piece.last:
                return data

    def chunks(self, grant: pb.Grant, *bodies: bytes, start: int | None = None) -> None:
        first = grant.next_chunk if start is None else start
        self.send(
            pb.WorkerMessage(
                chunks=[
                    pb.OutputChunk(
                        request_id=grant.request_id,
                        lease_id=grant.lease_id,
                        index=first + i,
                        data=b,
                    )
                    for i, b in enumerate(bodies)
                ]
            )
        )

    def complete(self, grant: pb.Grant, output_tokens: int = 4, credits: int = 1) -> None:
        self.send(
            pb.WorkerMessage(
                credits=credits,
                completions=[
                    pb.Completion(
                        request_id=grant.request_id,
                        lease_id=grant.lease_id,
                        input_tokens=3,
                        output_tokens=output_tokens,
                        finish_reason="stop",
                    )
                ],
            )
        )

    def close(self) -> None:
        """The worker goes away (its stream is cut, as when the process dies)."""
        self.call.cancel()
        self._out.put(None)
        self._reader.join(5)

    def finish(self) -> None:
        """The worker ends its side cleanly."""
        self._out.put(None)


def read_reply(
    server: Server,
    submitted: pb.SubmitResponse,
    tenant: str = "acme",
    timeout: float = 20.0,
) -> tuple[list[bytes], dict[str, str]]:
    """Subscribe to the request's reply from its reply_offset until its end mark:
    (chunk bodies in order, asserting each index once and no gap; the end's properties)."""
    client = _Keyed(server.broker(), metadata(tenant))
    stream = Stream(
        client,
        bpb.SubscribeRequest(
            add=[
                bpb.Subscription(
                    topic=submitted.reply_topic,
                    lite_topic=submitted.reply_lite_topic,
                    start=at(submitted.reply_offset),
                )
            ],
            credits=10_000,
        ),
    )
    bodies: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while True:
            frame = stream.next(max(0.01, deadline - time.monotonic()))
            for message in frame.messages:
                props = dict(message.properties)
                if props.get("tidegate.request") != submitted.request_id:
                    continue
                assert int(props["tidegate.chunk"]) == len(bodies), (props, len(bodies))
                if props["tidegate.event"] == "end":
                    return bodies, props
                bodies.append(message.body)
    finally:
        stream.close()


@dataclass
class _Keyed:
    stub: bgrpc.BrokerStub
    meta: tuple[tuple[str, str], ...]

    def Subscribe(self, requests: Iterator[bpb.SubscribeRequest], timeout: float) -> object:
        return self.stub.Subscribe(requests, metadata=self.meta, timeout=timeout)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
