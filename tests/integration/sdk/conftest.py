"""The SDK's integration tests run against the server tests' real server process."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.server.conftest import KEYS, Server, server, server_factory
from tidegate import Client, Retry

__all__ = ["KEYS", "Server", "client", "server", "server_factory"]

# Quick to give up, so a test of an unreachable server does not wait long; long
# enough for the restart tests (a server restarts in well under 10 s).
RETRY = Retry(initial_s=0.05, max_s=0.5, give_up_s=20.0)


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.address, api_key=KEYS["acme"], retry=RETRY) as c:
        yield c


def make_client(server: Server, tenant: str = "acme", **kwargs: object) -> Client:
    options: dict[str, object] = {"api_key": KEYS[tenant], "retry": RETRY, **kwargs}
    return Client(server.address, **options)  # type: ignore[arg-type]


ClientFactory = Callable[..., Client]
