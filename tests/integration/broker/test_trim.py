"""Trim: a queue drops its entries below an offset, durably, and frees the log below."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import Broker, InvalidArgument, NotFound, PublishRequest, QueueName
from broker.index import keys as k
from broker.index.rocks import RocksIndex
from broker.index.store import Column
from broker.log.commitlog import CommitLog, LogConfig
from broker.trimming import encode_trim
from tests.integration.broker.conftest import OpenBroker


def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def _fill(broker: Broker, queue: str, count: int, size: int = 100, per: int = 500) -> None:
    """``count`` messages numbered from 0 (the first four bytes), ``per`` a publish."""
    topic, _, lite = queue.partition("/")
    lites = (lite,) if lite else ()
    for first in range(0, count, per):
        broker.publish_batch(
            [
                PublishRequest(topic, i.to_bytes(4, "big") + bytes(size - 4), lites)
                for i in range(first, min(count, first + per))
            ]
        )


def _numbers(broker: Broker, queue: str, start: int = 0) -> list[int]:
    out: list[int] = []
    offset = start
    while True:
        found = broker.read(queue, offset, 1000)
        if not found:
            return out
        out += [int.from_bytes(m.body[:4], "big") for m in found]
        offset = found[-1].offset + 1


def _index_entries(tmp_path: Path, qid: int) -> int:
    index = RocksIndex(store_dir(tmp_path) / "index")
    try:
        lo, hi = k.queue_range(qid)
        return sum(1 for _ in index.scan(Column.INDEX, lo, hi))
    finally:
        index.close()


def test_trim_drops_entries_below_and_reads_start_at_the_first_kept(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker()
    _fill(broker, "requests", 50)
    report = broker.trim("requests", 20)
    assert (report.min_offset, report.trimmed) == (20, 20)
    assert report.first_position == broker.read("requests", 20, 1)[0].position
    info = broker.queue_info("requests")
    assert (info.min_offset, info.next_offset) == (20, 50)
    assert _numbers(broker, "requests") == list(range(20, 50))
    assert broker.read("requests", 5, 1)[0].offset == 20  # an exact read below finds another
    again = broker.trim("requests", 10)  # below the low offset: nothing to do
    assert (again.min_offset, again.trimmed) == (20, 0)
    assert broker.publish("requests", b"\x00\x00\x00\x32").offsets == (50,)


def test_trim_past_the_end_empties_the_queue_and_keeps_its_offsets(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker()
    _fill(broker, "chatbot/s-1", 10)
    report = broker.trim("chatbot/s-1", 1_000)
    assert (report.min_offset, report.trimmed, report.first_position) == (10, 10, None)
    assert broker.read("chatbot/s-1") == []
    assert broker.publish("chatbot", b"\x00\x00\x00\x0a", lite_topics=["s-1"]).offsets == (10,)
    assert _numbers(broker, "chatbot/s-1") == [10]


def test_trim_refuses_a_negative_offset_and_an_unknown_queue(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish("t", b"x")
    with pytest.raises(InvalidArgument, match="below_offset is -1"):
        broker.trim("t", -1)
    with pytest.raises(NotFound):
        broker.trim("nothing/here", 3)


def test_a_trim_longer_than_one_chunk_goes_in_several(
    open_broker: OpenBroker, tmp_path: Path
) -> None:
    broker = open_broker(segment_bytes=1 << 20)
    _fill(broker, "requests", 10_000, size=8)
    report = broker.trim("requests", 9_000)
    assert (report.min_offset, report.trimmed) == (9_000, 9_000)
    assert _numbers(broker, "requests") == list(range(9_000, 10_000))
    qid = broker.queue_info("requests").queue_id
    broker.close()
    assert _index_entries(tmp_path, qid) == 1_000


def test_a_trim_past_the_end_keeps_what_is_published_while_it_runs(
    open_broker: OpenBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trim record names the end as the trim began; messages published
    between its chunks are newer than that and stay."""
    import broker.store as store_module

    broker = open_broker()
    _fill(broker, "requests", 10, size=8)
    monkeypatch.setattr(store_module, "_TRIM_CHUNK", 4)
    real = store_module.drop_below  # type: ignore[attr-defined]  # the name the store calls
    published: list[int] = []

    def drop_and_publish(*args: object, **kwargs: object) -> int:
        dropped = real(*args, **kwargs)  # type: ignore[arg-type]
        if not published:  # a publisher gets in between two chunks
            published.append(broker.publish("requests", b"late").offsets[0])
        return dropped

    monkeypatch.setattr(store_module, "drop_below", drop_and_publish)
    report = broker.trim("requests", 1_000)
    assert published == [10]
    assert report.min_offset == 10
    assert [m.body for m in broker.read("requests", 0, 10)] == [b"late"]


def test_a_trim_survives_close_and_reopen(open_broker: OpenBroker, tmp_path: Path) -> None:
    broker = open_broker()
    _fill(broker, "requests", 40)
    broker.trim("requests", 25)
    qid = broker.queue_info("requests").queue_id
    broker.close()
    assert _index_entries(tmp_path, qid) == 15  # the entries are gone from RocksDB
    broker = open_broker()
    assert broker.queue_info("requests").min_offset == 25
    assert _numbers(broker, "requests") == list(range(25, 40))
    assert broker.publish("requests", b"\x00\x00\x00\x28").offsets == (40,)


def test_replaying_the_log_over_a_trimmed_index_brings_nothing_back(
    open_broker: OpenBroker, tmp_path: Path
) -> None:
    """A crash that left the covered position behind: the whole log is replayed."""
    broker = open_broker()
    _fill(broker, "requests", 40)
    broker.trim("requests", 25)
    broker.close()
    index = RocksIndex(store_dir(tmp_path) / "index")
    batch = index.batch()
    batch.put(Column.META, k.META_COVERED, k.encode_u64(0))  # forget what was covered
    index.write(batch)
    index.close()
    broker = open_broker()
    assert broker.queue_info("requests").min_offset == 25
    assert _numbers(broker, "requests") == list(range(25, 40))


def test_an_index_rebuilt_from_the_log_trims_again(open_broker: OpenBroker, tmp_path: Path) -> None:
    broker = open_broker()
    _fill(broker, "requests", 40)
    _fill(broker, "chatbot/s-1", 10)
    broker.trim("requests", 25)
    broker.trim("chatbot/s-1", 4)
    _fill(broker, "requests", 5)  # more after the trim records: offsets 40..44
    broker.close()
    shutil.rmtree(store_dir(tmp_path) / "index")
    broker = open_broker()
    assert broker.queue_info("requests").min_offset == 25
    assert _numbers(broker, "requests") == list(range(25, 40)) + list(range(5))
    assert _numbers(broker, "chatbot/s-1") == list(range(4, 10))
    assert broker.publish("requests", b"\x00\x00\x00\x00").offsets == (45,)


def test_a_crash_between_the_trim_record_and_the_index_write_trims_on_open(
    open_broker: OpenBroker, tmp_path: Path
) -> None:
    broker = open_broker()
    _fill(broker, "requests", 30)
    broker.close()
    log = CommitLog.open(store_dir(tmp_path) / "log", LogConfig(segment_bytes=64 * 1024))
    try:  # what trim() writes first; the crash took the index batch that follows
        log.append([encode_trim(QueueName("", "requests").key, 12)])
    finally:
        log.close()
    broker = open_broker()
    assert broker.queue_info("requests").min_offset == 12
    assert _numbers(broker, "requests") == list(range(12, 30))


def test_trim_then_expire_deletes_the_segments_below(open_broker: OpenBroker) -> None:
    broker = open_broker()  # 64 KiB segments
    _fill(broker, "requests", 3_000, size=200, per=50)  # ~700 KiB: a dozen segments
    broker.expire()
    before = broker.stats()
    assert before.log_segments >= 8
    assert before.log_start == 0  # the requests queue still needs all of it
    end = broker.queue_info("requests").next_offset
    report = broker.trim("requests", end - 100)
    assert report.first_position is not None
    assert broker.stats().log_segments == before.log_segments  # not before an expire pass
    expired = broker.expire()
    after = broker.stats()
    assert expired.reclaimed_bytes > 0
    assert after.log_segments <= 3
    assert 0 < after.log_start <= report.first_position
    assert _numbers(broker, "requests") == list(range(end - 100, end))


def test_trim_and_expire_keep_the_chunks_a_kept_message_wrote_early(
    open_broker: OpenBroker,
) -> None:
    """A slow big body's chunks land below records of lower offsets in its queue."""
    broker = open_broker(chunk_bytes=4096)
    _fill(broker, "files", 1)

    def slow_body() -> Iterator[bytes]:
        for _ in range(5):  # four chunks go to the log once the fifth piece is in
            yield b"A" * 4096
        _fill(broker, "files", 1_500, size=200)  # offsets 1..1500, ~300 KiB of records
        yield b"B" * 4096

    (big,) = broker.publish_batch([PublishRequest("files", slow_body())])
    assert big.offsets == (1_501,)
    report = broker.trim("files", 1_500)  # keeps offset 1500 (a small one) and the big one
    assert report.first_position is not None
    assert report.first_position < broker.read("files", 1_500, 1)[0].position
    broker.expire()
    assert broker.stats().log_start <= report.first_position
    kept = broker.read("files", 0, 10)
    assert [m.offset for m in kept] == [1_500, 1_501]
    assert b"".join(broker.open_body(kept[1])) == b"A" * 5 * 4096 + b"B" * 4096
    broker.trim("files", 1_502)  # and once the big one goes, its chunks may go
    broker.expire()
    assert broker.stats().log_start > report.first_position


def test_trim_records_do_not_hold_the_log(open_broker: OpenBroker) -> None:
    broker = open_broker()
    for _ in range(6):
        _fill(broker, "requests", 400, size=200, per=50)
        broker.trim("requests", broker.queue_info("requests").next_offset)
        broker.expire()
    assert broker.stats().log_segments <= 2
    assert broker.read("requests") == []
