"""The queue registry on a MemoryIndex: creation, the hot set, staging, expiry."""

from __future__ import annotations

from broker.index import keys as k
from broker.index.memory import MemoryIndex
from broker.index.store import Column
from broker.topics import Registry
from broker.types import QueueName


def registry(index: MemoryIndex, *, hot: int = 4, ttl: float | None = 10.0) -> Registry:
    return Registry(
        index,
        lambda topic: None if topic == "keep" else ttl,
        granularity_s=1.0,
        hot_capacity=hot,
        ref_bucket=4096,
    )


def key(lite: str, topic: str = "chat") -> bytes:
    return QueueName("", topic, lite).key


def commit(index: MemoryIndex, reg: Registry) -> None:
    batch = index.batch()
    reg.stage(batch)
    index.write(batch)


def test_new_queues_get_fresh_ids_that_survive_a_reopen() -> None:
    index = MemoryIndex()
    reg = registry(index)
    entries = reg.resolve([key("a"), key("b"), key("a")], now=100.0)
    assert [entries[key("a")].qid, entries[key("b")].qid] == [1, 2]
    commit(index, reg)
    assert reg.queue_count == 2
    again = registry(MemoryIndex(index.backing))
    assert again.queue_count == 2
    assert again.resolve([key("c")], 101.0)[key("c")].qid == 3
    entry = again.lookup(key("a"))
    assert entry is not None
    assert (entry.qid, entry.created, entry.ttl) == (1, 100.0, 10.0)
    assert again.lookup(key("zzz")) is None


def test_the_hot_set_is_bounded_and_a_batch_keeps_one_object_per_name() -> None:
    index = MemoryIndex()
    reg = registry(index, hot=2)
    names = [key(f"s-{i}") for i in range(10)]
    entries = reg.resolve(names, 1.0)
    first = entries[names[0]]
    assert reg.hot_count == 2
    assert reg.resolve([names[0]], 1.0)[names[0]] is first  # evicted, yet the same object
    first.next_offset = 5
    commit(index, reg)
    assert reg.hot_count == 2
    loaded = reg.lookup(names[0])
    assert loaded is not None
    assert loaded.next_offset == 5


def test_stage_groups_expiry_names_and_counts_references() -> None:
    index = MemoryIndex()
    reg = registry(index)
    entries = reg.resolve([key("a"), key("b"), key("x", topic="keep")], 100.2)
    for offset, entry in enumerate(entries.values()):
        entry.first_position = 5000 * offset  # buckets 0, 1, 2 (width 4096)
    commit(index, reg)
    expiry = list(index.scan(Column.EXPIRY, b""))
    assert len(expiry) == 1  # one key for the batch's one deadline, "keep" has no TTL
    assert k.expiry_deadline(expiry[0][0]) == 111_000  # 110.2 rounded up to the second
    assert k.decode_names(expiry[0][1]) == [key("a"), key("b")]
    refs = {k.decode_u64(a): k.decode_u64(b) for a, b in index.scan(Column.REFS, b"")}
    assert refs == {0: 1, 1: 1, 2: 1}
    assert reg.lowest_reference() == 0


def test_activity_writes_a_new_expiry_key_only_when_the_deadline_bucket_moves() -> None:
    index = MemoryIndex()
    reg = registry(index)
    reg.resolve([key("a")], 100.2)
    commit(index, reg)
    entry = reg.resolve([key("a")], 100.7)[key("a")]
    entry.last_active = 100.7  # deadline 110.7 rounds to 111 s as 110.2 did: no new key
    commit(index, reg)
    assert len(list(index.scan(Column.EXPIRY, b""))) == 1
    entry = reg.resolve([key("a")], 101.5)[key("a")]
    entry.last_active = 101.5
    commit(index, reg)
    assert len(list(index.scan(Column.EXPIRY, b""))) == 2  # the old one goes stale


def test_expire_removes_due_idle_topics_and_skips_stale_or_subscribed_ones() -> None:
    index = MemoryIndex()
    reg = registry(index)
    entries = reg.resolve([key("idle"), key("used"), key("held")], 100.0)
    for entry in entries.values():
        entry.first_position = 0
        entry.next_offset = 1
    batch = index.batch()
    for entry in entries.values():
        batch.put(Column.INDEX, k.offset_key(entry.qid, 0), k.encode_index(0, 1))
    reg.stage(batch)
    index.write(batch)
    used = reg.resolve([key("used")], 105.0)[key("used")]
    used.last_active = 105.0
    commit(index, reg)
    reg.subscribers[key("held")] = 1
    assert reg.expire_chunk(109.9, 100) == (0, False)
    assert reg.expire_chunk(110.0, 100) == (1, False)
    assert reg.lookup(key("idle")) is None
    assert index.get(Column.INDEX, k.offset_key(entries[key("idle")].qid, 0)) is None
    assert reg.queue_count == 2
    assert reg.expire_chunk(114.9, 100) == (0, False)
    assert reg.expire_chunk(115.0, 100) == (1, False)  # "used" once its own deadline came
    assert reg.lookup(key("held")) is not None
    assert list(index.scan(Column.EXPIRY, b"")) == []  # the held one re-arms on unsubscribe
    assert list(index.scan(Column.REFS, b"")) == [(k.encode_u64(0), k.encode_u64(1))]


def test_rearm_all_recomputes_deadlines_from_the_registry() -> None:
    index = MemoryIndex()
    reg = registry(index)
    reg.resolve([key("a"), key("b")], 100.0)
    commit(index, reg)
    shorter = Registry(
        MemoryIndex(index.backing),
        lambda topic: 2.0,
        granularity_s=1.0,
        hot_capacity=4,
        ref_bucket=4096,
    )
    assert shorter.rearm_all() == 2
    assert shorter.expire_chunk(102.0, 100) == (2, False)


def test_a_new_topic_and_a_used_one_sharing_a_deadline_both_get_armed() -> None:
    """Regression: the second group of a deadline replaced the first."""
    index = MemoryIndex()
    reg = registry(index)
    reg.resolve([key("old")], 100.0)
    commit(index, reg)
    entries = reg.resolve([key("old"), key("new")], 105.0)
    entries[key("old")].last_active = 105.0
    commit(index, reg)
    armed = [
        n for _, v in index.scan(Column.EXPIRY, k.expiry_key(115_000, 0)) for n in k.decode_names(v)
    ]
    assert sorted(armed) == [key("new"), key("old")]
