"""Tenants, auth, limits, validation and fuzz through a real server."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import cast

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker import Broker, BrokerSettings, QueueName
from broker.index import keys as k
from broker.index.store import Column
from broker.proto import broker_pb2 as pb
from tests.integration.server.conftest import KEYS, Server
from tests.integration.server.streams import EARLIEST, Stream

pytestmark = pytest.mark.integration
S = grpc.StatusCode


def status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    call = cast(grpc.Call, exc)
    return call.code(), call.details() or ""


def code_of(call: Callable[..., object], *args: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return status(info.value)


def one(topic: str = "chat", lite: str = "s-1", body: bytes = b"x") -> pb.PublishRequest:
    return pb.PublishRequest(
        messages=[pb.OutboundMessage(topic=topic, lite_topics=[lite], body=body)]
    )


def test_every_call_needs_a_valid_key(server: Server) -> None:
    anonymous = server.stub(None)
    assert code_of(anonymous.Publish, one())[0] is S.UNAUTHENTICATED
    wrong = server.stub("acme")
    wrong.metadata = (("authorization", "Bearer not-a-key"),)
    code, details = code_of(wrong.Status, pb.StatusRequest())
    assert code is S.UNAUTHENTICATED
    assert "not-a-key" not in details
    bearer = server.stub("acme")
    bearer.metadata = (("authorization", f"Bearer {KEYS['beta']}"),)
    assert bearer.Status(pb.StatusRequest()).tenant == "beta"
    claims = server.stub("acme")
    claims.metadata = (("x-api-key", KEYS["acme"]), ("x-tidegate-tenant", "beta"))
    assert code_of(claims.Read, pb.ReadRequest(topic="chat"))[0] is S.PERMISSION_DENIED
    assert KEYS["acme"] not in server.log()


def test_health_and_reflection_need_no_key(server: Server) -> None:
    channel = grpc.insecure_channel(server.address)
    server.channels.append(channel)
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="tidegate.v1.Broker"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tenants_never_meet(server: Server) -> None:
    acme, beta = server.stub("acme"), server.stub("beta")
    acme.Publish(one(body=b"acme's"))
    assert code_of(beta.Read, pb.ReadRequest(topic="chat", lite_topic="s-1"))[0] is S.NOT_FOUND
    result = beta.Publish(one(body=b"beta's")).results[0]
    assert list(result.offsets) == [0]
    read = beta.Read(pb.ReadRequest(topic="chat", lite_topic="s-1"))
    assert [m.body for m in read.messages] == [b"beta's"]
    beta.Publish(one(lite="s-2"))
    held = [stub.Status(pb.StatusRequest()).lite_topics for stub in (acme, beta)]
    assert held == [1, 2]  # counted on demand: neither tenant has a lite-topic limit


def test_tenant_limits_are_refused_naming_the_limit(server: Server) -> None:
    tiny = server.stub("tiny")
    for i in range(3):
        tiny.Publish(one(lite=f"l-{i}"))
    tiny.Publish(one(lite="l-0"))  # an existing one is fine
    code, details = code_of(tiny.Publish, one(lite="l-3"))
    assert code is S.RESOURCE_EXHAUSTED
    assert "max_lite_topics=3" in details
    stream = Stream(
        tiny,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="chat", lite_topic=f"l-{i}") for i in range(3)]
        ),
    )
    refused = stream.changed()  # a refused add is answered, not the stream's end
    assert refused.refused.code == S.RESOURCE_EXHAUSTED.value[0]
    assert "max_subscriptions=2" in refused.refused.message
    assert (len(refused.started), len(refused.refused_adds), refused.total) == (0, 3, 0)
    stream.close()
    held = tiny.Status(pb.StatusRequest())
    assert (held.lite_topics, held.max_tenant_lite_topics) == (3, 3)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (one(topic="bad topic"), "messages[0]: topic"),
        (one(lite="a/b"), "messages[0].lite_topics[0]"),
        (pb.PublishRequest(), "messages holds 0"),
        (
            pb.PublishRequest(
                messages=[pb.OutboundMessage(topic="t", properties={"tidegate.x": "1"})]
            ),
            "messages[0].properties",
        ),
        (
            pb.PublishRequest(messages=[pb.OutboundMessage(topic="t", reply_to="a/b/c")]),
            "messages[0].reply_to",
        ),
        (pb.PublishRequest(messages=[pb.OutboundMessage(topic="t")], sequence=3), "producer_id"),
        (
            pb.PublishRequest(messages=[pb.OutboundMessage(topic="t")], producer_id="no spaces"),
            "producer_id",
        ),
    ],
)
def test_bad_publishes_name_the_field(
    server: Server, request_: pb.PublishRequest, field: str
) -> None:
    code, details = code_of(server.stub("acme").Publish, request_)
    assert code is S.INVALID_ARGUMENT
    assert field in details


def test_bad_reads_and_subscriptions_name_the_field(server: Server) -> None:
    acme = server.stub("acme")
    code, details = code_of(acme.Read, pb.ReadRequest(topic="t", max_messages=10**6))
    assert (code, "max_messages" in details) == (S.INVALID_ARGUMENT, True)
    code, details = code_of(lambda r: list(acme.ReadBody(r)), pb.ReadBodyRequest(topic="nope"))
    assert (code, "nope" in details) == (S.NOT_FOUND, True)
    stream = Stream(acme, pb.SubscribeRequest(add=[pb.Subscription(topic="t", lite_topic="")]))
    stream.changed()
    stream.send(pb.SubscribeRequest(add=[pb.Subscription(topic="t", lite_topic="x" * 200)]))
    with pytest.raises(grpc.RpcError) as info:
        stream.changed()
    assert status(info.value)[0] is S.INVALID_ARGUMENT
    assert "add[0]" in status(info.value)[1]
    stream.close()
    bad_open = Stream(acme, pb.SubscribeRequest(open=pb.SubscribeOpen(lease_s=-1)))
    with pytest.raises(grpc.RpcError) as info:
        bad_open.next()
    assert "open.lease_s" in status(info.value)[1]
    bad_open.close()
    for field in ("max_batch_messages", "max_lease_messages"):
        too_big = pb.SubscribeOpen(group="g")
        setattr(too_big, field, 1001)
        bad_open = Stream(acme, pb.SubscribeRequest(open=too_big))
        with pytest.raises(grpc.RpcError) as info:
            bad_open.next()
        assert status(info.value)[0] is S.INVALID_ARGUMENT
        assert f"open.{field} is 1001; it must be in [1, 1000]" in status(info.value)[1]
        bad_open.close()


ALLOWED = {
    S.OK,
    S.INVALID_ARGUMENT,
    S.NOT_FOUND,
    S.FAILED_PRECONDITION,
    S.RESOURCE_EXHAUSTED,
    S.PERMISSION_DENIED,
    S.UNAUTHENTICATED,
}


def _random_message(rng: random.Random) -> bytes:
    """Garbage, truncated real messages, or real messages with wild field values
    (per-message or compact batches, now and then both at once)."""
    choice = rng.randrange(3)
    if choice == 0:
        return rng.randbytes(rng.randrange(0, 200))
    names = ["", "t", "a/b", "x" * 300, "%DLQ%g", "ok-topic", "\x00", "é", "s-1"]
    if rng.random() < 0.4:
        real = _random_batch(rng, names)
        if choice == 1 and real:
            return real[: rng.randrange(len(real))]
        return real
    real = pb.PublishRequest(
        messages=[
            pb.OutboundMessage(
                topic=rng.choice(names),
                lite_topics=[rng.choice(names) for _ in range(rng.randrange(3))],
                body=rng.randbytes(rng.randrange(50)),
                properties={rng.choice(names): rng.choice(names)} if rng.random() < 0.3 else {},
                reply_to=rng.choice(names) if rng.random() < 0.3 else "",
            )
            for _ in range(rng.randrange(4))
        ],
        producer_id=rng.choice(["", "p", "bad id"]),
        sequence=rng.randrange(3),
    ).SerializeToString()
    if choice == 1 and real:
        return real[: rng.randrange(len(real))]
    return real


def _random_batch(rng: random.Random, names: list[str]) -> bytes:
    """A compact batch with wild names, counts and producer fields, sometimes
    beside per-message messages (which the server must refuse)."""
    request = pb.PublishRequest(
        batch=pb.PublishBatch(
            topic=rng.choice(names),
            lite_topics=[rng.choice(names) for _ in range(rng.randrange(4))],
            bodies=[rng.randbytes(rng.randrange(50)) for _ in range(rng.randrange(5))],
        ),
        producer_id=rng.choice(["", "p", "bad id"]),
        sequence=rng.randrange(3),
    )
    if rng.random() < 0.2:
        request.messages.add(topic=rng.choice(names), body=b"x")
    return request.SerializeToString()


def test_fuzz_every_request_gets_a_proper_status_and_the_server_stays_up(server: Server) -> None:
    rng = random.Random(1234)
    channel = grpc.insecure_channel(server.address)
    server.channels.append(channel)
    metadata = (("x-api-key", KEYS["acme"]),)
    methods = ["Publish", "Read", "QueueInfo", "Status"]
    calls = {
        name: channel.unary_unary(f"/tidegate.v1.Broker/{name}", None, None) for name in methods
    }
    seen: dict[grpc.StatusCode, str] = {}
    for _ in range(300):
        name = rng.choice(methods)
        code, details = S.OK, ""
        try:
            calls[name](_random_message(rng), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            code, details = status(exc)
        seen[code] = f"{name}: {details}"
    stream_call = channel.stream_stream("/tidegate.v1.Broker/Subscribe", None, None)
    for _ in range(20):
        frames = [rng.randbytes(rng.randrange(1, 40)) for _ in range(rng.randrange(1, 4))]
        code, details = S.OK, ""
        try:
            for _ in stream_call(iter(frames), metadata=metadata, timeout=5):
                pass
        except grpc.RpcError as exc:
            code, details = status(exc)
        seen[code] = f"Subscribe: {details}"
    assert set(seen) <= ALLOWED | {S.DEADLINE_EXCEEDED}, seen
    assert S.INVALID_ARGUMENT in seen
    assert server.stub("acme").Status(pb.StatusRequest()).tenant == "acme"
    assert server.proc is not None
    assert server.proc.poll() is None


@pytest.mark.slow
def test_a_64_mib_message_end_to_end_in_chunks(server: Server) -> None:
    acme = server.stub("acme")
    size = 64 * 1024 * 1024
    piece = 1024 * 1024
    rng = random.Random(7)
    block = rng.randbytes(piece)
    digest = hashlib.sha256()

    def frames() -> Iterator[pb.PublishFrame]:
        yield pb.PublishFrame(open=pb.PublishOpen(producer_id="big", sequence=1))
        yield pb.PublishFrame(message=pb.OutboundMessage(topic="big", lite_topics=["one"]))
        for i in range(size // piece):
            data = bytes([i % 251]) + block[1:]
            digest.update(data)
            yield pb.PublishFrame(body=data)

    result = acme.PublishStream(frames(), timeout=120).results[0]
    assert (list(result.offsets), result.size) == ([0], size)
    stream = Stream(
        acme,
        pb.SubscribeRequest(
            add=[pb.Subscription(topic="big", lite_topic="one", start=EARLIEST)], credits=1
        ),
    )
    stream.changed()
    (head,) = stream.next(30).messages
    assert (head.chunked, head.size) == (True, size)
    got = hashlib.sha256()
    received = 0
    while True:
        chunk = stream.next(30).body_chunk
        got.update(chunk.data)
        received += len(chunk.data)
        if chunk.last:
            break
    stream.close()
    assert (received, got.hexdigest()) == (size, digest.hexdigest())


def test_a_damaged_index_entry_ends_the_stream_with_data_loss_naming_it(server: Server) -> None:
    acme = server.stub("acme")
    for _ in range(5):
        acme.Publish(one())
    opened = pb.SubscribeRequest(
        open=pb.SubscribeOpen(group="g", lease_s=60),
        add=[pb.Subscription(topic="chat", lite_topic="s-1", start=EARLIEST)],
        credits=3,
    )
    stream = Stream(acme, opened)
    while not (frame := stream.next()).runs and not frame.messages:
        pass  # up to the first frame with messages: the group now has a batch in flight
    stream.close()
    server.stop()
    # Damage that batch's entry in the stopped server's index.
    with Broker.open(server.directory / "data", BrokerSettings()) as broker:
        qid = broker.entry(QueueName("acme", "chat", "s-1")).qid
        batch = broker.index.batch()
        batch.put(Column.LEASES, k.group_key(qid, "g"), b"\x01\x02")
        broker.index.write(batch)
    server.start()
    again = Stream(server.stub("acme"), opened)

    def to_the_end() -> None:
        while True:
            again.next()

    with pytest.raises(grpc.RpcError) as info:
        to_the_end()
    code, message = status(info.value)
    assert code is S.DATA_LOSS
    assert "group 'g' on" in message
    assert "chat/s-1" in message
    again.close()
    acme = server.stub("acme")
    acme.Publish(one(lite="s-2"))  # the server is up and serves the rest
