"""Restarts: the log is the truth, the index catches up (or steps back) on open."""

from __future__ import annotations

import shutil
from pathlib import Path

from broker import Broker, BrokerSettings, FsyncPolicy, PublishRequest, QueueName, envelope
from broker.index import keys as k
from broker.index.memory import MemoryBacking, MemoryIndex
from broker.index.rocks import RocksIndex
from broker.index.store import Column, IndexStore
from broker.log.commitlog import CommitLog, LogConfig
from tests.integration.broker.conftest import FakeClock, OpenBroker


def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def test_a_restart_keeps_queues_offsets_and_bodies(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish_batch(
        [PublishRequest("chatbot", f"m{i}".encode(), (f"s-{i % 3}",)) for i in range(30)]
    )
    broker.publish("requests", b"r0", properties={"p": "v"})
    info = broker.queue_info("chatbot/s-1")
    broker.close()
    broker = open_broker()
    assert broker.queue_info("chatbot/s-1") == info
    assert [m.body for m in broker.read("chatbot/s-1")] == [
        f"m{i}".encode() for i in range(1, 30, 3)
    ]
    assert broker.read("requests")[0].properties == {"p": "v"}
    assert broker.publish("chatbot", b"next", lite_topics=["s-1"]).offsets == (10,)
    assert broker.stats().queues == 4


def _append_behind_the_index(directory: Path, records: list[bytes]) -> list[int]:
    """What a crash between the log append and the index write leaves: log records only."""
    log = CommitLog.open(directory / "log", LogConfig(segment_bytes=64 * 1024))
    try:
        return log.append(records)
    finally:
        log.close()


def test_records_the_index_missed_are_replayed_on_open(
    open_broker: OpenBroker, tmp_path: Path, clock: FakeClock
) -> None:
    broker = open_broker()
    broker.publish("chatbot", b"indexed", lite_topics=["s-1"])
    broker.close()
    s1 = QueueName("", "chatbot", "s-1").key
    s9 = QueueName("", "chatbot", "s-9").key
    _append_behind_the_index(
        store_dir(tmp_path),
        [
            envelope.encode_inline(clock.now + 1, [(s1, 1), (s9, 0)], envelope.NO_PROPERTIES, b"a"),
            envelope.chunk_payload(b"orphan chunk: ignored"),
            envelope.encode_inline(clock.now + 2, [(s1, 2)], envelope.NO_PROPERTIES, b"b"),
        ],
    )
    broker = open_broker()
    assert [m.body for m in broker.read("chatbot/s-1")] == [b"indexed", b"a", b"b"]
    assert [m.body for m in broker.read("chatbot/s-9")] == [b"a"]
    assert broker.queue_info("chatbot/s-9").created == clock.now + 1  # the record's time
    assert broker.publish("chatbot", b"c", lite_topics=["s-1"]).offsets == (3,)
    assert broker.stats().index_covered == broker.stats().log_end


def test_replay_is_idempotent(open_broker: OpenBroker, tmp_path: Path) -> None:
    broker = open_broker()
    broker.publish_batch([PublishRequest("t", bytes([i]), ("a", "b")) for i in range(20)])
    before = [broker.read(q, 0, 100) for q in ("t/a", "t/b")]
    broker.close()
    index = RocksIndex(store_dir(tmp_path) / "index")
    batch = index.batch()
    batch.put(Column.META, k.META_COVERED, k.encode_u64(0))  # forget what was covered
    index.write(batch)
    index.close()
    broker = open_broker()
    assert [broker.read(q, 0, 100) for q in ("t/a", "t/b")] == before
    assert broker.publish("t", b"x", lite_topics=["a"]).offsets == (20,)


def test_a_lost_index_is_rebuilt_from_the_log(open_broker: OpenBroker, tmp_path: Path) -> None:
    broker = open_broker()
    broker.publish_batch([PublishRequest("t", bytes([i]), (f"q{i % 4}",)) for i in range(40)])
    broker.publish("files", b"z" * 300_000)  # chunked: 4 KiB chunks below
    expected = {q: [m.body for m in broker.read(f"t/{q}", 0, 100)] for q in ("q0", "q3")}
    broker.close()
    shutil.rmtree(store_dir(tmp_path) / "index")
    broker = open_broker()
    assert {q: [m.body for m in broker.read(f"t/{q}", 0, 100)] for q in ("q0", "q3")} == expected
    (big,) = broker.read("files")
    assert b"".join(broker.open_body(big)) == b"z" * 300_000
    assert broker.stats().queues == 5


def test_an_index_ahead_of_the_log_steps_back(open_broker: OpenBroker, tmp_path: Path) -> None:
    """fsync=interval and a machine crash: RocksDB kept entries whose log tail is gone."""
    broker = open_broker()
    results = broker.publish_batch([PublishRequest("t", bytes([i]), ("a",)) for i in range(5)])
    broker.publish("t", b"other", lite_topics=["b"])  # a queue wholly past the cut
    broker.commit_offset("g", "t/a", 5)
    broker.close()
    cut = results[3].position  # lose messages 3, 4 and the one to t/b
    segment = next((store_dir(tmp_path) / "log").glob("*.log"))
    with segment.open("r+b") as handle:
        handle.truncate(cut)
    broker = open_broker()
    assert [m.body for m in broker.read("t/a")] == [bytes([0]), bytes([1]), bytes([2])]
    assert broker.read("t/b") == []
    assert broker.committed_offset("g", "t/a") == 3
    again = broker.publish("t", b"new", lite_topics=["a"])
    assert again.offsets == (3,)
    assert again.position == cut
    assert [m.body for m in broker.read("t/a", 3)] == [b"new"]


def test_settings_are_not_stored_ttl_changes_apply_on_reopen(
    tmp_path: Path, clock: FakeClock
) -> None:
    directory = store_dir(tmp_path)
    with Broker.open(directory, BrokerSettings(fsync=FsyncPolicy.INTERVAL), clock=clock) as broker:
        broker.publish("chatbot", b"x", lite_topics=["s-1"])
    settings = BrokerSettings(fsync=FsyncPolicy.INTERVAL, ttl_by_topic={"chatbot": 5.0})
    with Broker.open(directory, settings, clock=clock) as broker:
        assert broker.queue_info("chatbot/s-1").ttl_s == 5.0
        clock.advance(6)
        assert broker.expire().expired_queues == 1


def test_the_broker_runs_on_any_index_store(tmp_path: Path, clock: FakeClock) -> None:
    """The MemoryIndex satisfies the protocol the broker needs, reopen included."""
    backing = MemoryBacking()

    def memory(path: Path, settings: BrokerSettings) -> IndexStore:
        return MemoryIndex(backing)

    settings = BrokerSettings(fsync=FsyncPolicy.INTERVAL, default_ttl_s=5.0)
    with Broker.open(tmp_path, settings, clock=clock, index_opener=memory) as broker:
        broker.publish("chatbot", b"x", lite_topics=["s-1", "s-2"])
        broker.publish("chatbot", b"y", lite_topics=["s-1"])
    with Broker.open(tmp_path, settings, clock=clock, index_opener=memory) as broker:
        assert [m.body for m in broker.read("chatbot/s-1")] == [b"x", b"y"]
        clock.advance(5)
        assert broker.expire().expired_queues == 2
    for column in Column:  # forget everything but the log: a full replay
        backing.columns[column].clear()
    with Broker.open(tmp_path, settings, clock=clock, index_opener=memory) as broker:
        assert [m.body for m in broker.read("chatbot/s-1")] == [b"x", b"y"]


def test_stepping_back_also_drops_dead_letters_past_the_end(
    open_broker: OpenBroker, tmp_path: Path
) -> None:
    broker = open_broker(max_attempts=1)
    broker.publish("t", b"kept", lite_topics=["a"])
    cut = broker.publish("t", b"lost", lite_topics=["a"]).position
    broker.lease("g", "t/a", 2, 5.0)
    broker.nack("g", "t/a", [0, 1])
    assert broker.lease("g", "t/a", 2, 5.0).dead_lettered == (0, 1)
    dlq = QueueName.dead_letter("", "g")
    assert [m.body for m in broker.read(dlq)] == [b"kept", b"lost"]
    broker.close()
    segment = next((store_dir(tmp_path) / "log").glob("*.log"))
    with segment.open("r+b") as handle:
        handle.truncate(cut)
    broker = open_broker(max_attempts=1)
    assert [m.body for m in broker.read(dlq)] == [b"kept"]
    broker.publish("t", b"new", lite_topics=["b"])  # lands where "lost" was
    assert [m.body for m in broker.read(dlq, 0, 10)] == [b"kept"]
