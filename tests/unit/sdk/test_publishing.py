"""Batch plans, body pieces and argument shapes shared by both clients."""

from __future__ import annotations

import pytest

from tidegate.connect import UNARY_BODY_BYTES
from tidegate.errors import InvalidArgument
from tidegate.publishing import (
    as_bytes,
    chunk_frames,
    lites_of,
    plan_batches,
    refs_of,
    resliced,
)
from tidegate.values import Outgoing, QueueRef
from tidegate.wire import PIECE_BYTES, stream_frames

MiB = 1024 * 1024


def out(size: int, tag: int = 0) -> Outgoing:
    return Outgoing("t", bytes([tag % 256]) * size, ("x",))


def test_small_messages_go_in_unary_batches_capped_by_count_and_bytes() -> None:
    plans = plan_batches([out(10, i) for i in range(2500)])
    assert [(p.stream, len(p.messages)) for p in plans] == [(False, 1000)] * 2 + [(False, 500)]
    big = plan_batches([out(MiB) for _ in range(10)])
    assert all(not p.stream for p in big)
    assert all(sum(m.size for m in p.messages) <= UNARY_BODY_BYTES for p in big)
    assert sum(len(p.messages) for p in big) == 10


def test_large_bodies_go_by_stream_and_order_is_kept() -> None:
    batch = [out(5, 1), out(UNARY_BODY_BYTES + 1, 2), out(UNARY_BODY_BYTES + 1, 3), out(5, 4)]
    plans = plan_batches(batch)
    assert [(p.stream, [m.body[0] for m in p.messages]) for p in plans] == [
        (False, [1]),
        (True, [2, 3]),
        (False, [4]),
    ]


def test_stream_frames_open_then_header_then_pieces() -> None:
    message = Outgoing("t", b"a" * (2 * PIECE_BYTES + 5), ("x",), {"k": "v"})
    frames = list(stream_frames([message], "prod", 7))
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds == ["open", "message", "body", "body", "body"]
    assert (frames[0].open.producer_id, frames[0].open.sequence) == ("prod", 7)
    assert frames[1].message.body == b""
    assert dict(frames[1].message.properties) == {"k": "v"}
    assert [len(f.body) for f in frames[2:]] == [PIECE_BYTES, PIECE_BYTES, 5]


def test_chunks_are_resliced_to_pieces_and_must_be_bytes() -> None:
    pieces = list(resliced([b"ab", b"", bytearray(b"c" * (PIECE_BYTES + 1))]))
    assert [len(p) for p in pieces] == [2, PIECE_BYTES, 1]
    header = Outgoing("t", b"", ("x",))
    with pytest.raises(InvalidArgument, match="chunk 1"):
        list(chunk_frames(header, [b"ok", 5], "p", 1))


def test_argument_shapes() -> None:
    assert as_bytes("é") == "é".encode()
    assert as_bytes(memoryview(b"m")) == b"m"
    assert as_bytes([b"chunk"]) is None
    assert lites_of(None) == ()
    assert lites_of("a") == ("a",)
    assert lites_of(["a", "b"]) == ("a", "b")
    assert refs_of("t", None) == [QueueRef("t")]
    assert refs_of("t", "a") == [QueueRef("t", "a")]
    assert refs_of("t", ["a", "b"]) == [QueueRef("t", "a"), QueueRef("t", "b")]
