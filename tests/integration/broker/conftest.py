"""Broker test fixtures: a hand-moved clock and a store factory on tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker import Broker, BrokerSettings


@dataclass
class FakeClock:
    """Wall-clock seconds the test moves by hand."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


OpenBroker = Callable[..., Broker]


@pytest.fixture
def open_broker(tmp_path: Path, clock: FakeClock) -> Iterator[OpenBroker]:
    """``open_broker(**settings)`` opens (or reopens) the store in one directory.

    Defaults favour fast tests: fsync at intervals, small segments. Every
    broker opened is closed at teardown.
    """
    opened: list[Broker] = []

    def make(**overrides: Any) -> Broker:
        values: dict[str, Any] = {"fsync": "interval", "segment_bytes": 64 * 1024}
        values.update(overrides)
        broker = Broker.open(tmp_path / "store", BrokerSettings(**values), clock=clock)
        opened.append(broker)
        return broker

    yield make
    for broker in opened:
        broker.close()
