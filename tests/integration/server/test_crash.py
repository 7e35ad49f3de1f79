"""Stopping and killing the server: nothing acknowledged is lost."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import grpc
import pytest

from broker.proto import broker_pb2 as pb
from tests.integration.server.conftest import Server
from tests.integration.server.streams import Stream

pytestmark = [pytest.mark.integration, pytest.mark.crash]


def batch(start: int, count: int) -> pb.PublishRequest:
    return pb.PublishRequest(
        messages=[
            pb.OutboundMessage(topic="log", lite_topics=[f"l-{i % 7}"], body=b"%d" % i)
            for i in range(start, start + count)
        ]
    )


def read_all(server: Server) -> dict[str, list[bytes]]:
    client = server.stub("acme")
    out: dict[str, list[bytes]] = {}
    for lite in (f"l-{i}" for i in range(7)):
        offset, bodies = 0, []
        while True:
            try:
                read = client.Read(
                    pb.ReadRequest(
                        topic="log", lite_topic=lite, from_offset=offset, max_messages=1000
                    )
                )
            except grpc.RpcError:
                break
            if not read.messages:
                break
            bodies += [m.body for m in read.messages]
            offset = read.next_offset
        out[lite] = bodies
    return out


def publish_until_killed(server: Server, acked: list[int]) -> threading.Thread:
    client = server.stub("acme")

    def run() -> None:
        n = 0
        while True:
            try:
                client.Publish(batch(n, 50), timeout=5)
            except (grpc.RpcError, ValueError):  # ValueError: the channel was closed
                return
            acked.extend(range(n, n + 50))
            n += 50

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_sigkill_during_publish_loses_nothing_acknowledged(
    server_factory: Callable[..., Server], fsync: str
) -> None:
    server = server_factory(fsync=fsync)
    acked: list[int] = []
    thread = publish_until_killed(server, acked)
    deadline = time.monotonic() + 10
    while len(acked) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    thread.join(10)
    assert acked
    server.start()
    stored = {int(b) for bodies in read_all(server).values() for b in bodies}
    assert set(acked) <= stored
    for bodies in read_all(server).values():  # per lite-topic order survives
        numbers = [int(b) for b in bodies]
        assert numbers == sorted(numbers)


def test_sigterm_exits_0_and_a_restart_keeps_every_acknowledged_message(
    server: Server,
) -> None:
    acked: list[int] = []
    thread = publish_until_killed(server, acked)
    while len(acked) < 1000:
        time.sleep(0.02)
    assert server.stop(signal.SIGTERM) == 0
    thread.join(10)
    assert "stopping" in server.log()
    server.start()
    stored = {int(b) for bodies in read_all(server).values() for b in bodies}
    assert set(acked) <= stored


def test_sigkill_during_consume_redelivers_everything_not_acked(server: Server) -> None:
    client = server.stub("acme")
    client.Publish(batch(0, 70))
    acked: set[int] = set()

    def consume(count: int) -> None:
        stream = Stream(
            server.stub("acme"),
            pb.SubscribeRequest(
                open=pb.SubscribeOpen(group="c", lease_s=1.5, max_batch_messages=5),
                add=[pb.Subscription(topic="log", lite_topic=f"l-{i}") for i in range(7)],
                credits=1000,
            ),
        )
        stream.changed()
        while len(acked) < count:
            got = stream.deliveries(1)
            for d in got:
                stream.send(
                    pb.SubscribeRequest(
                        ack=[pb.Settle(topic="log", lite_topic=d.lite_topic, offsets=[d.offset])]
                    )
                )
                acked.add(int(d.body))
        stream.close()

    consume(30)
    time.sleep(0.3)  # let the last acks land; unlanded ones are redelivered anyway
    server.stop(signal.SIGKILL)
    server.start()
    consume(70)
    assert acked == set(range(70))
