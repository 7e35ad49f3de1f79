"""A real ``tidegate serve`` process on loopback, with a temporary config and data dir."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.proto import broker_pb2_grpc as pb_grpc
from tests.support.server import ServeProcess

KEYS = {"acme": "acme-secret-key-1", "beta": "beta-secret-key-2", "tiny": "tiny-secret-key-3"}

CONFIG = """\
tenants:
  acme:
    api_key_env: TG_TEST_ACME
  beta:
    api_key_env: TG_TEST_BETA
  tiny:
    api_key_file: tiny.key
    max_lite_topics: 3
    max_subscriptions: 2
broker:
  fsync: {fsync}
  max_attempts: 3
  segment_bytes: 8388608
"""


@dataclass
class Server(ServeProcess):
    """One server process; ``restart`` and ``kill`` keep the data dir and the port."""

    fsync: str = "interval"
    extra_config: str = ""  # YAML appended to CONFIG (e.g. a server: section with TLS files)

    def start(self) -> Server:
        (self.directory / "tiny.key").write_text(KEYS["tiny"] + "\n")
        self.launch(
            CONFIG.format(fsync=self.fsync) + self.extra_config,
            {"TG_TEST_ACME": KEYS["acme"], "TG_TEST_BETA": KEYS["beta"]},
            port=self.port,  # a restart keeps the address (clients reconnect)
        )
        return self

    def stub(self, tenant: str | None = "acme") -> Client:
        metadata = () if tenant is None else (("x-api-key", KEYS[tenant]),)
        return Client(pb_grpc.BrokerStub(self.channel()), metadata)

    def restart(self) -> Server:
        self.stop()
        return self.start()


@dataclass
class Client:
    """The generated stub with the tenant's key on every call."""

    stub: pb_grpc.BrokerStub
    metadata: tuple[tuple[str, str], ...]

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self.metadata)
            kwargs.setdefault("timeout", 30)
            return method(request, **kwargs)

        return call


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(fsync: str = "interval", name: str = "srv") -> Server:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        server = Server(directory, fsync).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
