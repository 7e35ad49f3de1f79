"""What the sync and async clients share: the channel's settings and credentials,
the call metadata, and the constructor's checks.

The channel's own reconnect backoff is capped at the client's :class:`Retry`
``max_s``: gRPC's default (1 s growing to 120 s) would keep a channel failing
fast long after a restarted server is back, whatever our own retry loop does.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from grpc import aio

from tidegate.errors import InvalidArgument
from tidegate.options import ApiKey, Retry, Tls
from tidegate.producer import Lanes

__all__ = ["Connection", "channel_options", "credentials"]

MiB = 1024 * 1024
# Frames from the server hold at most ~2 MiB of bodies (larger bodies come in
# 1 MiB pieces) and the server takes frames up to 16 MiB; 64 MiB leaves room.
MAX_FRAME_BYTES = 64 * MiB
# A unary Publish carries at most this many body bytes; more goes by PublishStream.
UNARY_BODY_BYTES = 4 * MiB


@dataclass(frozen=True, slots=True)
class Connection:
    """A client's settings, checked once (both clients build one)."""

    server: str
    metadata: tuple[tuple[str, str], ...] = field(repr=False)
    tls: Tls | None
    retry: Retry
    timeout_s: float
    rng: random.Random = field(repr=False)
    lanes: Lanes = field(repr=False)

    @classmethod
    def make(
        cls,
        server: str,
        *,
        api_key: str | ApiKey | None,
        tenant: str | None,
        tls: Tls | None,
        retry: Retry | None,
        timeout_s: float,
        producer_id: str | None,
        first_sequence: int | None,
        rng: random.Random | None,
        wall_us: Callable[[], int] | None = None,
    ) -> Connection:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(f"server {server!r} must be HOST:PORT (e.g. 127.0.0.1:7400)")
        if not timeout_s > 0:
            raise InvalidArgument(f"timeout_s is {timeout_s}; it must be > 0")
        metadata: list[tuple[str, str]] = []
        if api_key is not None:
            key = api_key if isinstance(api_key, ApiKey) else ApiKey(api_key)
            metadata.append(("authorization", f"Bearer {key.reveal()}"))
        if tenant is not None:
            metadata.append(("x-tidegate-tenant", tenant))
        lanes = Lanes.for_client(
            producer_id,
            first_sequence,
            new_id=lambda: f"sdk-{uuid.uuid4().hex[:20]}",
            wall_us=wall_us or (lambda: time.time_ns() // 1000),
        )
        return cls(
            server=server,
            metadata=tuple(metadata),
            tls=tls,
            retry=retry or Retry(),
            timeout_s=timeout_s,
            rng=rng or random.Random(),  # jitter, not secrets
            lanes=lanes,
        )

    def options(self) -> list[tuple[str, int | str]]:
        return channel_options(self.retry, self.tls)

    def channel(self) -> grpc.Channel:
        """A blocking-API channel to the server: TLS when set, these options.

        gRPC connects lazily, so this does no I/O; both channel kinds are made
        here so that the sync and async clients cannot drift apart.
        """
        if self.tls is None:
            return grpc.insecure_channel(self.server, options=self.options())
        return grpc.secure_channel(self.server, credentials(self.tls), options=self.options())

    def aio_channel(self) -> aio.Channel:
        """An asyncio channel to the server, as :meth:`channel` (call it inside a loop)."""
        if self.tls is None:
            return aio.insecure_channel(self.server, options=self.options())
        return aio.secure_channel(self.server, credentials(self.tls), options=self.options())

    def __repr__(self) -> str:
        return f"Connection(server={self.server!r}, tls={self.tls is not None})"


def channel_options(retry: Retry, tls: Tls | None) -> list[tuple[str, int | str]]:
    reconnect_ms = max(1, int(retry.initial_s * 1000))
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", MAX_FRAME_BYTES),
        ("grpc.max_send_message_length", MAX_FRAME_BYTES),
        ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
        ("grpc.min_reconnect_backoff_ms", reconnect_ms),
        ("grpc.max_reconnect_backoff_ms", max(reconnect_ms, int(retry.max_s * 1000))),
    ]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def credentials(tls: Tls) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=tls.root_certificates,
        private_key=tls.private_key,
        certificate_chain=tls.certificate_chain,
    )
