"""A 64 MiB body through the SDK both ways, never held more than about twice."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator

import pytest

from tidegate import Client, Start

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MiB = 1024 * 1024
SIZE = 64 * MiB


def chunks() -> Iterator[bytes]:
    """The body, made one 1 MiB chunk at a time (the test never holds it whole)."""
    for i in range(SIZE // MiB):
        yield bytes([i % 251]) * MiB


def test_64_mib_through_the_sdk_both_ways(client: Client) -> None:
    expected = hashlib.sha256()
    for chunk in chunks():
        expected.update(chunk)

    tracemalloc.start()
    try:
        result = client.publish("big", chunks(), lite="blob")
        _, publish_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        with client.subscribe("big", ["blob"], start=Start.earliest(), buffer=1) as sub:
            message = sub.get(timeout=60)
        _, receive_peak = tracemalloc.get_traced_memory()
        assert message is not None
        received = hashlib.sha256(message.body).hexdigest()
        size = len(message.body)
        del message
        tracemalloc.reset_peak()

        streamed = hashlib.sha256()
        for piece in client.read_body("big", "blob", result.offset or 0):
            streamed.update(piece)
        _, stream_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result.size, size) == (SIZE, SIZE)
    assert received == streamed.hexdigest() == expected.hexdigest()
    # Publishing holds a few 1 MiB pieces; receiving whole holds the pieces, then
    # the joined body (twice, briefly); reading as a stream holds a few pieces.
    assert publish_peak < 16 * MiB, publish_peak
    assert receive_peak < 2.25 * SIZE, receive_peak
    assert stream_peak < 16 * MiB, stream_peak


def test_a_large_bytes_body_is_streamed_and_retryable(client: Client) -> None:
    body = bytes(range(256)) * (24 * MiB // 256)
    result = client.publish("big", body, lite="bytes")
    assert result.size == len(body)
    read = client.read("big", "bytes")
    assert read.messages[0].chunked
    assert not read.messages[0].complete
    assert b"".join(client.read_body("big", "bytes", 0)) == body
