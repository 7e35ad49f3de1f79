"""MemoryIndex: the IndexStore in Python dicts, for unit tests.

It keeps RocksDB's semantics that the broker relies on (ordered scans,
half-open delete ranges, atomic batches, a scan that does not see writes made
after it began) and nothing of its durability: a :class:`MemoryBacking`
outlives the index objects opened on it, which is how tests "reopen" one.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from broker.errors import StoreClosed
from broker.index.store import Column, WriteOps

__all__ = ["MemoryBacking", "MemoryIndex"]

_Op = tuple[int, Column, bytes, bytes]
_PUT, _DELETE, _DELETE_RANGE = 0, 1, 2


@dataclass(slots=True)
class MemoryBacking:
    """What a MemoryIndex stores; survives the index being closed."""

    columns: dict[Column, dict[bytes, bytes]] = field(
        default_factory=lambda: {column: {} for column in Column}
    )


class _MemoryBatch:
    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[_Op] = []

    def put(self, column: Column, key: bytes, value: bytes) -> None:
        self.ops.append((_PUT, column, bytes(key), bytes(value)))

    def delete(self, column: Column, key: bytes) -> None:
        self.ops.append((_DELETE, column, bytes(key), b""))

    def delete_range(self, column: Column, start: bytes, end: bytes) -> None:
        self.ops.append((_DELETE_RANGE, column, bytes(start), bytes(end)))

    def __len__(self) -> int:
        return len(self.ops)


class MemoryIndex:
    """An IndexStore held in memory."""

    def __init__(self, backing: MemoryBacking | None = None) -> None:
        self.backing = backing if backing is not None else MemoryBacking()
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed()

    def batch(self) -> WriteOps:
        self._check()
        return _MemoryBatch()

    def sync(self) -> None:
        self._check()  # nothing to make durable

    def write(self, batch: WriteOps, *, sync: bool = False) -> None:
        del sync  # nothing to make durable
        self._check()
        assert isinstance(batch, _MemoryBatch), "a batch from another store"
        columns = self.backing.columns
        for kind, column, key, value in batch.ops:
            data = columns[column]
            if kind == _PUT:
                data[key] = value
            elif kind == _DELETE:
                data.pop(key, None)
            else:
                for doomed in [k for k in data if key <= k < value]:
                    del data[doomed]
        batch.ops = []  # like RocksDB, a written batch is consumed

    def get(self, column: Column, key: bytes) -> bytes | None:
        self._check()
        return self.backing.columns[column].get(key)

    def get_many(self, column: Column, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check()
        data = self.backing.columns[column]
        return [data.get(key) for key in keys]

    def scan(
        self, column: Column, start: bytes, end: bytes | None = None, *, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        data = self.backing.columns[column]
        ordered = sorted(data)
        lo = bisect_left(ordered, start)
        hi = len(ordered) if end is None else max(lo, bisect_left(ordered, end))
        if limit is not None:
            hi = min(hi, lo + limit)
        # A snapshot, as a RocksDB iterator would see.
        return iter([(key, data[key]) for key in ordered[lo:hi]])

    def memory_bytes(self) -> int:
        return sum(
            sys.getsizeof(k) + sys.getsizeof(v)
            for data in self.backing.columns.values()
            for k, v in data.items()
        )

    def close(self) -> None:
        self._closed = True
