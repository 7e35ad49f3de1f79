"""Fixtures: a factory of real servers on a temporary directory, all killed at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.inference.harness import Server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(
        fsync: str = "interval", extra: str = "", name: str = "srv", args: tuple[str, ...] = ()
    ) -> Server:
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        server = Server(directory, fsync, extra, args).start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.kill()


@pytest.fixture
def server(server_factory: Callable[..., Server]) -> Server:
    return server_factory()
