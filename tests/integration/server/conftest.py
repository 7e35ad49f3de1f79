"""A real ``tidegate serve`` process on loopback, with a temporary config and data dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.proto import broker_pb2_grpc as pb_grpc

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

MiB = 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 64 * MiB),
]


@dataclass
class Server:
    """One server process; ``restart`` and ``kill`` keep the data dir and the port."""

    directory: Path
    fsync: str = "interval"
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    channels: list[grpc.Channel] = field(default_factory=list)
    extra_config: str = ""  # YAML appended to CONFIG (e.g. a server: section with TLS files)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        config = self.directory / "config.yaml"
        config.write_text(CONFIG.format(fsync=self.fsync) + self.extra_config)
        (self.directory / "tiny.key").write_text(KEYS["tiny"] + "\n")
        env = {**os.environ, "TG_TEST_ACME": KEYS["acme"], "TG_TEST_BETA": KEYS["beta"]}
        with open(self.directory / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tidegate",
                    "serve",
                    "--config",
                    str(config),
                    "--data-dir",
                    str(self.directory / "data"),
                    "--listen",
                    f"127.0.0.1:{self.port}",  # a restart keeps the address (clients reconnect)
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}\n{self.log()}")
        self.port = int(line.split("listening on ")[1].split()[0].rpartition(":")[2])
        return self

    def log(self) -> str:
        return (self.directory / "server.log").read_text()

    def stub(self, tenant: str | None = "acme") -> Client:
        channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self.channels.append(channel)
        metadata = () if tenant is None else (("x-api-key", KEYS[tenant]),)
        return Client(pb_grpc.BrokerStub(channel), metadata)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        # Signal first, close our channels after: a kill must land while
        # clients are still talking to the server, not after they hung up.
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        for channel in self.channels:
            channel.close()
        self.channels.clear()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code

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
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait()
            if server.proc.stdout is not None:
                server.proc.stdout.close()
        for channel in server.channels:
            channel.close()


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
