"""One contract, two IndexStores: RocksIndex (real RocksDB in tmp_path) and MemoryIndex.

The broker relies on exactly these behaviours, so each runs against both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.errors import StoreClosed
from broker.index.memory import MemoryBacking, MemoryIndex
from broker.index.rocks import RocksIndex
from broker.index.store import Column, IndexStore

Opener = Callable[[], IndexStore]


@pytest.fixture(params=["memory", "rocks"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the same store again each call (to test what survives a reopen)."""
    opened: list[IndexStore] = []
    backing = MemoryBacking()

    def open_() -> IndexStore:
        for old in opened:
            old.close()
        store: IndexStore = (
            MemoryIndex(backing) if request.param == "memory" else RocksIndex(tmp_path / "idx")
        )
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def put(store: IndexStore, column: Column, pairs: dict[bytes, bytes]) -> None:
    batch = store.batch()
    for key, value in pairs.items():
        batch.put(column, key, value)
    store.write(batch)


def test_put_get_and_missing(opener: Opener) -> None:
    store = opener()
    assert store.get(Column.INDEX, b"a") is None
    put(store, Column.INDEX, {b"a": b"1", b"b": b""})
    assert store.get(Column.INDEX, b"a") == b"1"
    assert store.get(Column.INDEX, b"b") == b""  # empty values are values
    assert store.get_many(Column.INDEX, [b"b", b"zz", b"a"]) == [b"", None, b"1"]
    assert store.get_many(Column.INDEX, []) == []


def test_columns_are_separate(opener: Opener) -> None:
    store = opener()
    put(store, Column.REGISTRY, {b"k": b"reg"})
    put(store, Column.META, {b"k": b"meta"})
    assert store.get(Column.REGISTRY, b"k") == b"reg"
    assert store.get(Column.META, b"k") == b"meta"
    assert store.get(Column.INDEX, b"k") is None


def test_scan_is_ordered_half_open_and_limited(opener: Opener) -> None:
    store = opener()
    put(store, Column.INDEX, {bytes([i]): bytes([i * 2]) for i in (5, 1, 3, 9, 7)})
    assert [k for k, _ in store.scan(Column.INDEX, b"")] == [bytes([i]) for i in (1, 3, 5, 7, 9)]
    assert list(store.scan(Column.INDEX, bytes([3]), bytes([7]))) == [
        (bytes([3]), bytes([6])),
        (bytes([5]), bytes([10])),
    ]
    assert [k for k, _ in store.scan(Column.INDEX, bytes([2]), limit=2)] == [b"\x03", b"\x05"]
    assert list(store.scan(Column.INDEX, bytes([10]))) == []
    assert list(store.scan(Column.INDEX, bytes([5]), bytes([5]))) == []


def test_a_bounded_scan_keeps_its_bound_until_it_is_consumed(opener: Opener) -> None:
    """The scan's end must hold however long the caller waits to iterate and
    whatever the process allocates meanwhile (rocksdict borrows the bound from
    its ReadOptions: the store must keep that alive, see RocksIndex.scan)."""
    store = opener()
    put(store, Column.INDEX, {i.to_bytes(4, "big"): b"v" for i in range(1000)})
    for round_ in range(20):
        lo, hi = 100 + round_, 200 + round_
        scan = store.scan(Column.INDEX, lo.to_bytes(4, "big"), hi.to_bytes(4, "big"))
        churn = [bytes(16) + bytes([i % 256]) for i in range(2000)]  # reuse freed memory
        keys = [int.from_bytes(k, "big") for k, _ in scan]
        assert keys == list(range(lo, hi)), f"round {round_}: {len(keys)} keys"
        assert churn


def test_scan_does_not_see_later_writes(opener: Opener) -> None:
    store = opener()
    put(store, Column.INDEX, {b"a": b"1", b"c": b"3"})
    scan = store.scan(Column.INDEX, b"")
    put(store, Column.INDEX, {b"b": b"2"})
    assert [k for k, _ in scan] == [b"a", b"c"]


def test_delete_and_delete_range(opener: Opener) -> None:
    store = opener()
    put(store, Column.INDEX, {bytes([i]): b"v" for i in range(10)})
    batch = store.batch()
    batch.delete(Column.INDEX, bytes([0]))
    batch.delete(Column.INDEX, b"absent")
    batch.delete_range(Column.INDEX, bytes([3]), bytes([6]))
    store.write(batch)
    assert [k[0] for k, _ in store.scan(Column.INDEX, b"")] == [1, 2, 6, 7, 8, 9]


def test_a_batch_applies_in_order_and_only_when_written(opener: Opener) -> None:
    store = opener()
    batch = store.batch()
    batch.put(Column.INDEX, b"k", b"1")
    batch.delete(Column.INDEX, b"k")
    batch.put(Column.INDEX, b"k", b"2")
    batch.put(Column.META, b"covered", b"x")
    assert len(batch) == 4
    assert store.get(Column.INDEX, b"k") is None
    store.write(batch, sync=True)
    assert store.get(Column.INDEX, b"k") == b"2"
    assert store.get(Column.META, b"covered") == b"x"


def test_an_empty_batch_is_a_no_op(opener: Opener) -> None:
    store = opener()
    store.write(store.batch())
    assert list(store.scan(Column.INDEX, b"")) == []


def test_everything_survives_a_reopen(opener: Opener) -> None:
    store = opener()
    put(store, Column.INDEX, {b"a": b"1"})
    put(store, Column.LEASES, {b"l": b"2"})
    store = opener()
    assert store.get(Column.INDEX, b"a") == b"1"
    assert store.get(Column.LEASES, b"l") == b"2"


def test_a_closed_store_refuses_calls(opener: Opener) -> None:
    store = opener()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.get(Column.INDEX, b"a")
    with pytest.raises(StoreClosed):
        store.batch()
    assert store.memory_bytes() >= 0


def test_memory_use_is_reported(opener: Opener) -> None:
    store = opener()
    put(store, Column.REGISTRY, {bytes([i]) * 8: b"x" * 40 for i in range(200)})
    assert store.memory_bytes() > 0
