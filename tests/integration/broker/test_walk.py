"""A long read walks the log from its first record (Reader._walk): it gives
exactly what the index gives, and stops where the log stops being that
queue's next offsets."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import (
    Broker,
    BrokerSettings,
    FsyncPolicy,
    NotFound,
    PublishRequest,
    QueueName,
    envelope,
)
from broker.reading import _WALK_FROM, _WALK_SKIP
from tests.integration.broker.conftest import OpenBroker

A = QueueName("", "chatbot", "a")
B = QueueName("", "chatbot", "b")


def _by_index(broker: Broker, name: QueueName, start: int, count: int) -> list[object]:
    entry = broker.entry(name)
    stop = min(entry.next_offset, start + count)
    return list(broker.reader.messages_at(name, entry, range(start, stop), broker.log_start))


def _walk(broker: Broker, name: QueueName, start: int, count: int) -> list[object]:
    entry = broker.entry(name)
    stop = min(entry.next_offset, start + count)
    log_start = broker.log_start
    return list(broker.reader._walk(name, entry, range(start, stop), log_start, attempt=0))


def test_a_run_is_walked_whole_and_stops_at_another_queue_with_the_same_next_offset(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker()
    broker.publish_batch([PublishRequest("chatbot", b"b%d" % i, ("b",)) for i in range(20)])
    broker.publish_batch([PublishRequest("chatbot", b"a%d" % i, ("a",)) for i in range(20)])
    # B's next record names offset 20, A's next offset too: the name tells them apart.
    broker.publish_batch([PublishRequest("chatbot", b"b20", ("b",))])
    broker.publish_batch([PublishRequest("chatbot", b"a%d" % i, ("a",)) for i in range(20, 40)])
    walked = _walk(broker, A, 0, 40)
    assert walked == _by_index(broker, A, 0, 20)
    assert broker.read(A, 0, 40) == _by_index(broker, A, 0, 40)
    assert [m.body for m in broker.read(A, 0, 40)] == [b"a%d" % i for i in range(40)]


def test_a_record_of_several_queues_a_chunked_body_or_properties(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker(chunk_bytes=4096)
    plain = [PublishRequest("chatbot", b"p", ("a",))] * 20
    broker.publish_batch(plain)
    broker.publish_batch([PublishRequest("chatbot", b"both", ("a", "b"))])  # two queues
    broker.publish_batch(plain)
    broker.publish_batch([PublishRequest("chatbot", b"x" * 9000, ("a",))])  # chunked
    broker.publish_batch([PublishRequest("chatbot", b"r", ("a",), {"k": "v"})] * 20)
    assert len(_walk(broker, A, 0, 100)) == 20  # up to the record of two queues
    assert len(_walk(broker, A, 21, 100)) == 20  # up to the chunked body
    walked = _walk(broker, A, 42, 100)
    assert walked == _by_index(broker, A, 42, 20)  # properties are walked
    assert all(m.properties == {"k": "v"} for m in walked)  # type: ignore[attr-defined]
    assert broker.read(A, 0, 100) == _by_index(broker, A, 0, 100)


def test_a_queue_found_scattered_is_read_by_the_index_for_a_while(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker()
    broker.publish_batch(
        [PublishRequest("chatbot", b"m", (lite,)) for _ in range(40) for lite in ("a", "b")]
    )
    assert len(_walk(broker, A, 0, 40)) == 1  # B's record follows each of A's
    for _ in range(_WALK_SKIP):
        assert _walk(broker, A, 0, 40) == []  # not tried
    assert len(_walk(broker, A, 0, 40)) == 1  # tried again
    assert broker.read(A, 0, 40) == _by_index(broker, A, 0, 40)


def test_short_reads_use_the_index(open_broker: OpenBroker) -> None:
    broker = open_broker()
    broker.publish_batch([PublishRequest("chatbot", b"m", ("a",))] * 40)
    assert _walk(broker, A, 0, _WALK_FROM - 1) == []
    assert len(_walk(broker, A, 0, _WALK_FROM)) == _WALK_FROM


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([("a",), ("b",), ("a", "b")]),
            st.sampled_from([b"", b"s", b"m" * 700, b"c" * 9000]),
            st.booleans(),
            st.integers(1, 30),
        ),
        min_size=1,
        max_size=12,
    ),
    st.lists(
        st.tuples(st.sampled_from([A, B]), st.floats(0, 1), st.sampled_from([1, 16, 50, 400])),
        min_size=1,
        max_size=12,
    ),
)
def test_reads_match_the_index_over_random_logs(
    batches: list[tuple[tuple[str, ...], bytes, bool, int]],
    reads: list[tuple[QueueName, float, int]],
) -> None:
    config = BrokerSettings(fsync=FsyncPolicy.INTERVAL, chunk_bytes=4096, segment_bytes=16 * 1024)
    with tempfile.TemporaryDirectory() as directory, Broker.open(Path(directory), config) as broker:
        for lites, body, with_props, count in batches:
            props = {"k": "v"} if with_props else {}
            broker.publish_batch([PublishRequest("chatbot", body, lites, props)] * count)
        for name, where, count in reads:
            try:
                end = broker.entry(name).next_offset
            except NotFound:  # never published to
                continue
            start = round(where * end)
            expected = _by_index(broker, name, start, count)
            walked = _walk(broker, name, start, count)
            assert walked == expected[: len(walked)]
            assert broker.read(name, start, count) == expected


@pytest.mark.parametrize("segment_bytes", [4096, 64 * 1024 * 1024])
def test_a_walk_crosses_segments_and_reads_on_past_its_first_bytes(
    open_broker: OpenBroker, segment_bytes: int
) -> None:
    broker = open_broker(segment_bytes=segment_bytes)
    broker.publish_batch([PublishRequest("chatbot", b"w" * 1000, ("a",))] * 300)  # ~300 KB
    walked = _walk(broker, A, 0, 300)
    assert len(walked) == 300
    assert walked == _by_index(broker, A, 0, 300)


def test_a_chunked_body_among_a_batch_s_records_stops_the_walk(open_broker: OpenBroker) -> None:
    broker = open_broker(chunk_bytes=4096)
    plain = [PublishRequest("chatbot", b"p", ("a",))] * 20
    broker.publish_batch([*plain, PublishRequest("chatbot", b"x" * 9000, ("a",)), *plain])
    walked = _walk(broker, A, 0, 41)
    assert walked == _by_index(broker, A, 0, len(walked))
    assert len(walked) == 20
    assert broker.read(A, 0, 41) == _by_index(broker, A, 0, 41)


def test_a_record_of_this_queue_the_index_does_not_point_to_is_not_walked(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker()
    broker.publish_batch([PublishRequest("chatbot", b"a", ("a",))] * 20)
    # Not what the broker writes: a record naming A at a later offset, next in the log.
    stray = envelope.encode_single(envelope.single_head(1.0), A.key, 25, b"\x00\x00", b"stray")
    with broker.lock:
        broker.reader._log.append([stray])
    broker.publish_batch([PublishRequest("chatbot", b"a", ("a",))] * 20)
    assert len(_walk(broker, A, 0, 40)) == 20
    assert [m.body for m in broker.read(A, 0, 40)] == [b"a"] * 40


def test_records_past_the_first_read_ahead_are_walked_too(open_broker: OpenBroker) -> None:
    broker = open_broker(segment_bytes=64 * 1024 * 1024)
    broker.publish_batch([PublishRequest("chatbot", b"L" * 100_000, ("a",))] * 20)  # > 64 KiB each
    walked = _walk(broker, A, 0, 20)
    assert len(walked) == 20
    assert walked == _by_index(broker, A, 0, 20)
    assert not broker.reader._scattered
