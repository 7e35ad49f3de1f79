"""The server the gRPC workloads talk to: its address, the API key, what we know of it.

Calls go through the generated stubs of ``broker/proto/broker.proto`` with
no SDK in between, so the figures are the server's and the wire's, not a
client library's. Every call carries a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from broker.proto import broker_pb2 as pb
from broker.proto import broker_pb2_grpc as pb_grpc
from tidegate.errors import UsageError
from tidegate.options import ApiKey

__all__ = ["CALL_TIMEOUT_S", "Target", "rpc_failure"]

MiB = 1024 * 1024
CALL_TIMEOUT_S = 60.0
_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 64 * MiB),
]


@dataclass(frozen=True, slots=True)
class Target:
    """A running server. ``pid`` is known when the bench started it (or was
    told it), for the server's RSS; ``fsync`` when the bench wrote its config."""

    address: str
    api_key: ApiKey = field(repr=False)
    pid: int | None = None
    fsync: str | None = None

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address, options=_OPTIONS)

    def stub(self, channel: grpc.Channel) -> pb_grpc.BrokerStub:
        return pb_grpc.BrokerStub(channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key.reveal()}"),)

    def status(self) -> pb.StatusResponse:
        """Who we are to the server and how it is set up; also proves the key works."""
        with self.channel() as channel:
            try:
                return self.stub(channel).Status(
                    pb.StatusRequest(), metadata=self.metadata, timeout=10, wait_for_ready=False
                )
            except grpc.RpcError as exc:
                raise rpc_failure(f"server {self.address}", exc) from None


def rpc_failure(what: str, exc: grpc.RpcError) -> UsageError:
    """One line for a failed call: the status name and the server's message."""
    code_of = getattr(exc, "code", None)  # a grpc.Call's methods; a bare RpcError has none
    details_of = getattr(exc, "details", None)
    name = str(getattr(code_of() if callable(code_of) else None, "name", "UNKNOWN"))
    details = details_of() if callable(details_of) else None
    text = " ".join(str(details or exc or "no details").split())
    return UsageError(f"{what}: {name}: {text}")
