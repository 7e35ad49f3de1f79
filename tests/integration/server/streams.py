"""A small synchronous Subscribe driver for the tests (the SDK is not used here)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from broker.proto import broker_pb2 as pb

EARLIEST = pb.StartPosition(kind=pb.StartPosition.EARLIEST)
LATEST = pb.StartPosition(kind=pb.StartPosition.LATEST)


def at(offset: int) -> pb.StartPosition:
    return pb.StartPosition(kind=pb.StartPosition.OFFSET, offset=offset)


class Stream:
    """One Subscribe call: send requests, collect frames on a reader thread."""

    def __init__(self, client: Any, first: pb.SubscribeRequest) -> None:
        self._out: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
        self.frames: queue.Queue[pb.SubscribeResponse | BaseException | None] = queue.Queue()
        self._out.put(first)
        self.call = client.Subscribe(self._requests(), timeout=600)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _requests(self) -> Iterator[pb.SubscribeRequest]:
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
        except BaseException as exc:  # grpc.RpcError ends the stream
            self.frames.put(exc)

    def send(self, request: pb.SubscribeRequest) -> None:
        self._out.put(request)

    def next(self, timeout: float = 10.0) -> pb.SubscribeResponse:
        item = self.frames.get(timeout=timeout)
        if item is None:
            raise EOFError("the stream ended")
        if isinstance(item, BaseException):
            raise item
        return item

    def changed(self, timeout: float = 10.0) -> pb.SubscriptionsChanged:
        while True:
            frame = self.next(timeout)
            if frame.HasField("changed"):
                return frame.changed

    def deliveries(self, count: int, timeout: float = 10.0) -> list[pb.Delivery]:
        got: list[pb.Delivery] = []
        while len(got) < count:
            got += list(self.next(timeout).messages)
        return got

    def close(self) -> None:
        self._out.put(None)
        self.call.cancel()
        self._reader.join(5)
