"""RocksIndex: the IndexStore on RocksDB (rocksdict). The only rocksdict import.

Memory is bounded on purpose, because a million cold lite-topics must cost
RocksDB bytes on disk, not RSS: one WriteBufferManager caps every column
family's memtables together and one small block cache holds data blocks.
Bloom-filter and index blocks stay with their table readers (about 1.3 bytes
per key, bounded by ``max_open_files``): putting them in the block cache
too was measured to slow the lookups below by half. Bloom filters matter
here: creating a topic first asks the registry whether the name exists, and
almost always the answer is no.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import rocksdict

from broker.errors import StoreClosed
from broker.index.store import Column, WriteOps

__all__ = ["RocksIndex", "RocksTuning"]


@dataclass(frozen=True, slots=True)
class RocksTuning:
    """Memory knobs; the defaults keep RocksDB's own RSS near 100 MiB at most."""

    memtable_bytes: int = 64 << 20  # all column families' memtables together
    write_buffer_bytes: int = 16 << 20  # one memtable before it is switched
    cache_bytes: int = 16 << 20  # blocks, indexes and bloom filters
    max_open_files: int = 512
    max_wal_bytes: int = 128 << 20  # flush old memtables so replaying the WAL stays short


class _RocksBatch:
    # The batch reaches the column-family handles through its store, never
    # holding them itself: a handle keeps RocksDB open, and a batch can
    # outlive close() inside a traceback that someone keeps.
    __slots__ = ("_store", "wb")

    def __init__(self, store: RocksIndex) -> None:
        self.wb = rocksdict.WriteBatch(raw_mode=True)
        self._store = store

    def put(self, column: Column, key: bytes, value: bytes) -> None:
        self.wb.put(key, value, self._store.handles[column])

    def delete(self, column: Column, key: bytes) -> None:
        self.wb.delete(key, self._store.handles[column])

    def delete_range(self, column: Column, start: bytes, end: bytes) -> None:
        self.wb.delete_range(start, end, self._store.handles[column])

    def __len__(self) -> int:
        return int(self.wb.len())


class RocksIndex:
    """An IndexStore in a RocksDB directory."""

    def __init__(self, path: Path, tuning: RocksTuning | None = None) -> None:
        tuning = tuning or RocksTuning()
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        cache = rocksdict.Cache(tuning.cache_bytes)
        manager = rocksdict.WriteBufferManager(tuning.memtable_bytes, False)

        def options(column: Column | None = None) -> Any:
            opt = rocksdict.Options(raw_mode=True)
            table = rocksdict.BlockBasedOptions()
            table.set_block_cache(cache)
            table.set_bloom_filter(10, False)
            opt.set_block_based_table_factory(table)
            if column is Column.REGISTRY:
                # A bloom filter over the memtable: most registry lookups are
                # for names that do not exist yet, and this answers them
                # without a skiplist search. (Elsewhere it only slows writes.)
                opt.set_memtable_prefix_bloom_ratio(0.1)
                opt.set_memtable_whole_key_filtering(True)
            opt.set_write_buffer_size(tuning.write_buffer_bytes)
            opt.set_max_write_buffer_number(2)
            opt.set_write_buffer_manager(manager)
            return opt

        db_options = options()
        db_options.create_if_missing(True)
        db_options.create_missing_column_families(True)
        db_options.set_max_open_files(tuning.max_open_files)
        db_options.set_max_total_wal_size(tuning.max_wal_bytes)
        db_options.set_max_background_jobs(2)
        db_options.set_keep_log_file_num(2)
        self._cache = cache
        self._db: Any = rocksdict.Rdict(
            str(path),
            options=db_options,
            column_families={column.cf_name: options(column) for column in Column},
        )
        self._cfs: tuple[Any, ...] = tuple(
            self._db.get_column_family(column.cf_name) for column in Column
        )
        self.handles: tuple[Any, ...] = tuple(
            self._db.get_column_family_handle(column.cf_name) for column in Column
        )
        self._plain = rocksdict.WriteOptions()
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreClosed()

    def batch(self) -> WriteOps:
        self._check()
        return _RocksBatch(self)

    def write(self, batch: WriteOps, *, sync: bool = False) -> None:
        self._check()
        assert isinstance(batch, _RocksBatch), "a batch from another store"
        if batch.wb.len():
            self._db.write(batch.wb, self._sync if sync else self._plain)

    def sync(self) -> None:
        self._check()
        self._db.flush_wal(True)  # the WAL is sequential: this syncs every write before it

    def get(self, column: Column, key: bytes) -> bytes | None:
        self._check()
        value: bytes | None = self._cfs[column].get(key)
        return value

    def get_many(self, column: Column, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check()
        if not keys:
            return []
        values: list[bytes | None] = self._cfs[column].get(list(keys))
        return values

    def scan(
        self, column: Column, start: bytes, end: bytes | None = None, *, limit: int | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        read = rocksdict.ReadOptions()
        if end is not None:
            read.set_iterate_upper_bound(end)
        items = self._cfs[column].items(from_key=start, read_opt=read)

        def rows() -> Iterator[tuple[bytes, bytes]]:
            # rocksdict's iterator borrows the upper bound from ``read`` without
            # owning it: were ``read`` freed when scan() returns, the bound would
            # be whatever memory took its place, and the scan would stop early
            # or run on into the next queue's keys. Holding it here keeps it.
            held = read
            yield from items
            del held

        return rows() if limit is None else islice(rows(), limit)

    def memory_bytes(self) -> int:
        if self._closed:
            return 0
        memtables = sum(
            int(cf.property_int_value("rocksdb.cur-size-all-mem-tables") or 0) for cf in self._cfs
        )
        return memtables + int(self._cache.get_usage())

    def flush(self) -> None:
        """Write memtables out (tests of reopen use it; close does it too)."""
        self._check()
        for cf in self._cfs:
            cf.flush(True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        db = self._db
        # Column-family handles keep RocksDB alive: drop them before closing.
        self._cfs = ()
        self.handles = ()
        db.close()
        self._db = None
