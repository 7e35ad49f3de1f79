"""The index's I/O boundary: an ordered key-value store with column families.

The broker speaks to RocksDB only through :class:`IndexStore`;
:class:`broker.index.rocks.RocksIndex` is the real adapter and
:class:`broker.index.memory.MemoryIndex` the in-memory one. One contract test
suite runs against both, so the broker's logic can be trusted on either.

Writes go through a :class:`WriteOps` batch and land atomically: the broker
puts index entries and the log position they cover into one batch, which is
what makes replay after a crash exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import Protocol

__all__ = ["Column", "IndexStore", "WriteOps"]


class Column(IntEnum):
    """Column families (layouts in :mod:`broker.index.keys`)."""

    INDEX = 0
    REGISTRY = 1
    EXPIRY = 2
    REFS = 3
    OFFSETS = 4
    LEASES = 5
    META = 6

    @property
    def cf_name(self) -> str:
        return self.name.lower()


class WriteOps(Protocol):
    """A batch of writes applied atomically by :meth:`IndexStore.write`."""

    def put(self, column: Column, key: bytes, value: bytes) -> None: ...

    def delete(self, column: Column, key: bytes) -> None: ...

    def delete_range(self, column: Column, start: bytes, end: bytes) -> None:
        """Delete every key in ``[start, end)``."""

    def __len__(self) -> int:
        """Operations queued so far."""


class IndexStore(Protocol):
    """Ordered byte keys -> byte values, per column; atomic batches."""

    def batch(self) -> WriteOps:
        """A new, empty batch for this store."""

    def write(self, batch: WriteOps, *, sync: bool = False) -> None:
        """Apply ``batch`` atomically; with ``sync`` it is on disk when this returns."""

    def sync(self) -> None:
        """Put every write made so far on disk (as if each had been made with ``sync``)."""

    def get(self, column: Column, key: bytes) -> bytes | None: ...

    def get_many(self, column: Column, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def scan(
        self, column: Column, start: bytes, end: bytes | None = None, *, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < end`` in key order (at most ``limit``).

        The iterator sees the store as it was when iteration began; callers
        that write while scanning collect a bounded chunk first.
        """

    def memory_bytes(self) -> int:
        """Bytes the store holds in memory (memtables, caches) now."""

    def close(self) -> None:
        """Flush and release; further calls raise StoreClosed."""
