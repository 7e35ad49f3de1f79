"""One Subscribe stream driven synchronously, for the consume and fanin workloads.

A reader thread takes frames off the call and stamps each with the wall
time it arrived (``time.time()``, the clock the server stamps publishes
with), so a delivery's latency does not include the hop to the thread that
handles it. Every wait is bounded: a stream that goes quiet for
``stall_s`` ends the workload with one line, not a hang.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc

from broker.proto import broker_pb2 as pb
from tidegate.bench.target import Target, rpc_failure
from tidegate.errors import UsageError

__all__ = ["EARLIEST", "LATEST", "Frame", "SubscribeStream"]

EARLIEST = pb.StartPosition(kind=pb.StartPosition.EARLIEST)
LATEST = pb.StartPosition(kind=pb.StartPosition.LATEST)
_STREAM_TIMEOUT_S = 1800.0  # the call's own deadline: a backstop behind the stall checks

Frame = tuple[float, pb.SubscribeResponse]  # (arrival wall time, frame)


class SubscribeStream:
    """Send requests, read stamped frames; close() always ends the call."""

    def __init__(
        self, target: Target, first: pb.SubscribeRequest, *, stall_s: float = 30.0
    ) -> None:
        self.stall_s = stall_s
        self._channel = target.channel()
        self._out: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
        self._frames: queue.Queue[Frame | BaseException | None] = queue.Queue()
        self._out.put(first)
        stub = target.stub(self._channel)
        self._call = stub.Subscribe(
            self._requests(), metadata=target.metadata, timeout=_STREAM_TIMEOUT_S
        )
        self._reader = threading.Thread(target=self._read, name="bench-subscribe", daemon=True)
        self._reader.start()

    def _requests(self) -> Iterator[pb.SubscribeRequest]:
        while True:
            item = self._out.get()
            if item is None:
                return
            yield item

    def _read(self) -> None:
        try:
            for frame in self._call:
                self._frames.put((time.time(), frame))
            self._frames.put(None)
        except grpc.RpcError as exc:
            self._frames.put(exc)

    def send(self, request: pb.SubscribeRequest) -> None:
        self._out.put(request)

    def poll(self, timeout: float) -> Frame | None:
        """The next frame if one comes within ``timeout``, else None."""
        try:
            item = self._frames.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if item is None:
            self._frames.put(None)  # every later poll sees the end too
            raise UsageError("the server ended the subscription stream")
        if isinstance(item, grpc.RpcError):
            raise rpc_failure("subscribe", item)
        if isinstance(item, BaseException):
            raise item
        return item

    def next(self, timeout: float | None = None) -> Frame:
        """The next frame; UsageError if none comes within ``timeout`` (default stall_s)."""
        wait = self.stall_s if timeout is None else timeout
        frame = self.poll(wait)
        if frame is None:
            raise UsageError(f"the subscription stream sent nothing for {wait:g} s")
        return frame

    def changed(self) -> pb.SubscriptionsChanged:
        """Skip to the next SubscriptionsChanged (sent before deliveries from the new set)."""
        while True:
            _, frame = self.next()
            if frame.notice.code:
                raise UsageError(f"subscribe: {frame.notice.message}")
            if frame.HasField("changed"):
                return frame.changed

    def close(self) -> None:
        self._out.put(None)
        self._call.cancel()  # type: ignore[no-untyped-call]  # untyped in grpc-stubs
        self._reader.join(10)
        self._channel.close()
