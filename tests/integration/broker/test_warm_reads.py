"""Broker.warm_reads: what the server reads on its event loop comes from memory.
A read or lease whose log records are not in the page cache stops before it
reads or writes anything (preadv with RWF_NOWAIT); outside the block the
same call works as always, and reading brings the records back into the cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker import PublishRequest, QueueName
from broker.reading import ColdRead
from tests.integration.broker.conftest import OpenBroker

Q = QueueName("", "chat", "s-1")

pytestmark = pytest.mark.skipif(
    not hasattr(os, "RWF_NOWAIT"), reason="needs preadv with RWF_NOWAIT (Linux)"
)


def _evict(directory: Path) -> None:
    """Drop the log's pages from the page cache (they are synced, so they can go)."""
    for segment in (directory / "log").glob("*.log"):
        fd = os.open(segment, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _evictable(directory: Path) -> bool:
    """Whether this file system drops clean pages on request (tmpfs, say, does not)."""
    probe = directory / "probe"
    probe.write_bytes(b"x" * 65536)
    fd = os.open(probe, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fd)
        probe.unlink()


def test_reads_and_leases_of_uncached_records_stop_inside_warm_reads(
    open_broker: OpenBroker, tmp_path: Path
) -> None:
    if not _evictable(tmp_path):
        pytest.skip("this file system keeps its pages in memory: nothing is ever cold")
    broker = open_broker(fsync="always", segment_bytes=1 << 20)
    broker.publish_batch([PublishRequest("chat", b"x" * 1000, ("s-1",)) for _ in range(100)])
    _evict(tmp_path / "store")
    with broker.warm_reads(), pytest.raises(ColdRead):
        broker.read(Q, 0, 5)
    # A stopped read starts the kernel's readahead, so evict again.
    _evict(tmp_path / "store")
    with broker.warm_reads(), pytest.raises(ColdRead):
        broker.lease("g", Q, 10, 30.0)  # the group starts at the first offset
    # Nothing was leased by the stopped call: the same lease works in full,
    # and its read brought the records into the cache.
    lease = broker.lease("g", Q, 10, 30.0)
    assert [(m.offset, m.attempt) for m in lease.messages] == [(i, 1) for i in range(10)]
    with broker.warm_reads():
        assert [m.offset for m in broker.read(Q, 0, 5)] == [0, 1, 2, 3, 4]


def test_the_tails_answer_inside_warm_reads_with_nothing_cached(
    open_broker: OpenBroker, tmp_path: Path
) -> None:
    broker = open_broker(fsync="always")
    broker.subscribe(Q)
    broker.publish_batch([PublishRequest("chat", b"m", ("s-1",)) for _ in range(5)])
    _evict(tmp_path / "store")
    with broker.warm_reads():
        assert [m.offset for m in broker.read(Q, 0, 5)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("count", [15, 16, 40])
def test_a_long_read_of_cached_records_is_served_warm_whatever_follows_them(
    open_broker: OpenBroker, tmp_path: Path, count: int
) -> None:
    """A read of 16 or more walks the log with a read ahead of 64 KiB; where
    those bytes past the read's own records are not cached, the walk stops
    and the index path reads on, so the read is still served warm (found by
    review: it used to stop with ColdRead)."""
    if not _evictable(tmp_path):
        pytest.skip("this file system keeps its pages in memory: nothing is ever cold")
    broker = open_broker(fsync="always", segment_bytes=1 << 24)
    broker.publish_batch([PublishRequest("chat", b"m" * 50, ("s-1",))] * 16)
    broker.publish_batch([PublishRequest("chat", b"o" * 1000, ("s-2",))] * 200)
    broker.publish_batch([PublishRequest("chat", b"m" * 50, ("s-1",))] * 24)
    ours = broker.read(Q, 0, 16)
    keep = (ours[-1].position + 200 + 8192 + 4095) // 4096 * 4096  # their span and its guess
    for segment in (tmp_path / "store" / "log").glob("*.log"):
        fd = os.open(segment, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, keep, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    with broker.warm_reads():
        if count <= 16:
            assert broker.read(Q, 0, count) == ours[:count]
        else:  # offsets 16 on lie in the evicted pages: those do need the disk
            with pytest.raises(ColdRead):
                broker.read(Q, 0, count)
    assert [m.offset for m in broker.read(Q, 0, count)] == list(range(count))
