"""Shared helpers for commit-log unit tests: a fake clock and a counting fsync."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest


@dataclass
class FakeClock:
    """A wall clock the test moves by hand."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingFsync:
    """Counts fsync calls instead of making them (unit tests check logic, not disks)."""

    calls: int = 0
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, fd: int) -> None:
        with self._guard:
            self.calls += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fsync() -> CountingFsync:
    return CountingFsync()
