"""Large bodies: chunk records in, a stream out, never whole in memory twice."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator

import pytest

from broker import InvalidArgument, MessageTooLarge, NotFound, PublishRequest
from tests.integration.broker.conftest import OpenBroker

MiB = 1024 * 1024


def pattern(index: int, size: int) -> bytes:
    return hashlib.sha256(index.to_bytes(8, "big")).digest() * (size // 32)


def test_a_body_above_chunk_bytes_is_stored_in_chunks(open_broker: OpenBroker) -> None:
    broker = open_broker(chunk_bytes=4096)
    body = b"".join(pattern(i, 1024) for i in range(41))  # 41 KiB: 11 chunks
    broker.publish("files", body, lite_topics=["a", "b"])
    for queue in ("files/a", "files/b"):
        (message,) = broker.read(queue)
        assert message.chunked
        assert message.body == b""
        assert message.size == len(body)
        chunks = list(broker.open_body(message))
        assert [len(c) for c in chunks] == [4096] * 10 + [len(body) - 40960]
        assert b"".join(chunks) == body


def test_inline_up_to_chunk_bytes_and_chunked_above(open_broker: OpenBroker) -> None:
    broker = open_broker(chunk_bytes=4096)
    broker.publish("t", b"x" * 4096)
    broker.publish("t", b"y" * 4097)
    broker.publish("t", [b"z" * 1000] * 4)  # a stream that turns out small: inline too
    broker.publish("t", iter([b"w" * 3000, b"w" * 3000]))
    inline, big, small_stream, big_stream = broker.read("t")
    assert (inline.chunked, inline.body) == (False, b"x" * 4096)
    assert list(broker.open_body(inline)) == [b"x" * 4096]
    assert big.chunked
    assert [len(c) for c in broker.open_body(big)] == [4096, 1]
    assert (small_stream.chunked, small_stream.body) == (False, b"z" * 4000)
    assert big_stream.chunked
    assert b"".join(broker.open_body(big_stream)) == b"w" * 6000


def test_stream_pieces_of_any_size_are_recut_into_chunks(open_broker: OpenBroker) -> None:
    broker = open_broker(chunk_bytes=4096)
    pieces = [pattern(i, 32 * (i % 300 + 1)) for i in range(200)]
    broker.publish("t", (bytearray(p) if i % 2 else memoryview(p) for i, p in enumerate(pieces)))
    (message,) = broker.read("t")
    assert message.size == sum(map(len, pieces))
    chunks = list(broker.open_body(message))
    assert all(len(c) == 4096 for c in chunks[:-1])
    assert b"".join(chunks) == b"".join(pieces)


def test_too_large_names_size_and_limit_and_stores_nothing(open_broker: OpenBroker) -> None:
    broker = open_broker(chunk_bytes=4096, max_message_bytes=10_000)
    with pytest.raises(MessageTooLarge, match="10001 bytes, above the limit of 10000 bytes"):
        broker.publish("t", b"x" * 10_001)
    with pytest.raises(MessageTooLarge, match="above the limit of 10000 bytes") as info:
        broker.publish("t", iter([b"x" * 6000] * 3))
    assert info.value.limit == 10_000
    assert info.value.size > 10_000
    with pytest.raises(NotFound):
        broker.read("t")
    with pytest.raises(InvalidArgument, match="body chunks must be bytes-like"):
        broker.publish("t", iter(["text"]))  # type: ignore[arg-type]
    broker.publish("t", b"x" * 10_000)  # at the limit is fine
    assert broker.read("t")[0].size == 10_000


def test_a_chunked_message_whose_chunks_retention_took_is_skipped(
    open_broker: OpenBroker,
) -> None:
    broker = open_broker(chunk_bytes=4096, segment_bytes=8192, retention_bytes=16384)
    broker.publish("files", b"x" * 40_000)  # chunks span the first segments
    broker.publish_batch([PublishRequest("files", b"small")] * 30)
    assert broker.expire().retention_bytes > 0
    messages = broker.read("files", 0, 100)
    assert messages
    assert messages[0].offset >= 1  # the big one is gone: its first chunks were reclaimed
    assert all(m.body == b"small" for m in messages)


def test_open_body_of_a_message_that_is_gone(open_broker: OpenBroker) -> None:
    broker = open_broker(chunk_bytes=4096, segment_bytes=8192, retention_bytes=8192)
    broker.publish("files", b"x" * 20_000)
    (message,) = broker.read("files")
    for _ in range(10):
        broker.publish("other", b"y" * 4000)
    broker.expire()
    with pytest.raises(NotFound, match=r"message files@0"):
        b"".join(broker.open_body(message))


def test_a_64_mib_message_is_never_held_whole(open_broker: OpenBroker) -> None:
    """tracemalloc peak while publishing a streamed body and reading it back."""
    broker = open_broker(segment_bytes=128 * MiB)
    size = 64 * MiB
    expected = hashlib.sha256()

    def source() -> Iterator[bytes]:
        for i in range(size // (256 * 1024)):  # pieces of 256 KiB, made on demand
            piece = pattern(i, 256 * 1024)
            expected.update(piece)
            yield piece

    tracemalloc.start()
    try:
        broker.publish("files", source(), lite_topics=["big"])
        _, publish_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        (message,) = broker.read("files/big")
        got = hashlib.sha256()
        for chunk in broker.open_body(message):
            got.update(chunk)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert message.size == size
    assert got.hexdigest() == expected.hexdigest()
    assert publish_peak < 16 * MiB, publish_peak  # a few chunks, not 64 MiB
    assert read_peak < 8 * MiB, read_peak  # a chunk at a time (and its copies on the way)


def test_a_64_mib_bytes_body_is_not_copied_whole(open_broker: OpenBroker) -> None:
    broker = open_broker(segment_bytes=128 * MiB)
    body = bytes(64 * MiB)
    tracemalloc.start()
    try:
        broker.publish("files", body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, peak  # the caller's copy is the only whole one
    (message,) = broker.read("files")
    assert sum(len(c) for c in broker.open_body(message)) == len(body)
