"""Index key and value codecs: byte order is numeric order, values round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.index import keys as k

u64 = st.integers(0, 2**64 - 1)
offsets = st.integers(0, 2**63)


@given(st.integers(1, 2**62), offsets, offsets)
def test_offset_keys_sort_numerically_within_a_queue(qid: int, a: int, b: int) -> None:
    assert (k.offset_key(qid, a) < k.offset_key(qid, b)) == (a < b)
    assert k.offset_of(k.offset_key(qid, a)) == (qid, a)


@given(st.integers(1, 2**62), offsets)
def test_queue_range_holds_its_queue_and_nothing_else(qid: int, offset: int) -> None:
    lo, hi = k.queue_range(qid)
    assert lo <= k.offset_key(qid, offset) < hi
    assert not lo <= k.offset_key(qid + 1, 0) < hi
    assert not lo <= k.offset_key(qid - 1, 2**64 - 1) < hi
    assert lo <= k.group_key(qid, "g") < hi


def test_offset_key_layout_is_qid_then_offset_big_endian() -> None:
    assert k.offset_key(1, 2) == bytes([0] * 7 + [1] + [0] * 7 + [2])
    assert len(k.offset_key(2**64 - 1, 2**64 - 1)) == 16


@given(u64, st.integers(0, 2**32 - 1))
def test_inline_index_value_round_trip(position: int, size: int) -> None:
    value = k.decode_index(k.encode_index(position, size))
    assert (value.position, value.size, value.chunked, value.low) == (position, size, False, None)
    assert value.lowest == position


@given(u64, st.integers(0, 2**32 - 1), u64)
def test_chunked_index_value_round_trip(position: int, size: int, low: int) -> None:
    value = k.decode_index(k.encode_index(position, size, low))
    assert value.chunked
    assert (value.position, value.size, value.low) == (position, size, low)
    assert value.lowest == min(position, low)


def test_index_values_are_small() -> None:
    assert len(k.encode_index(1, 2)) == 13
    assert len(k.encode_index(1, 2, 0)) == 21


@given(u64, u64, u64, u64, st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_registry_round_trip(
    qid: int, nxt: int, low: int, first: int, created: float, active: float
) -> None:
    reg = k.decode_registry(k.encode_registry(qid, nxt, low, first, created, active))
    assert reg == k.Registration(qid, nxt, low, first, created, active)


@given(st.floats(0, 1e10), st.sampled_from([0.001, 0.25, 1.0, 7.5, 60.0]))
def test_deadlines_round_up_to_the_granularity(deadline: float, granularity: float) -> None:
    ms = k.deadline_ms(deadline, granularity)
    step = round(granularity * 1000)
    assert ms % step == 0
    assert ms >= deadline * 1000 - 1e-3  # never early (float slack only)
    assert ms - deadline * 1000 < step + 1e-3


def test_expiry_keys_sort_by_deadline_then_sequence() -> None:
    keys = [k.expiry_key(d, s) for d in (5, 1, 3) for s in (2, 0)]
    assert [k.expiry_deadline(x) for x in sorted(keys)] == [1, 1, 3, 3, 5, 5]
    assert k.expiry_key(1, 2**64 - 1) < k.expiry_key(2, 0)


@given(st.lists(st.binary(max_size=300), max_size=50))
def test_names_round_trip(names: list[bytes]) -> None:
    assert k.decode_names(k.encode_names(names)) == names


def test_truncated_names_are_refused() -> None:
    data = k.encode_names([b"abc", b"defg"])
    with pytest.raises(ValueError, match="inside a name"):
        k.decode_names(data[:-1])


def test_group_keys_round_trip() -> None:
    assert k.group_of(k.group_key(42, "workers")) == (42, "workers")


def test_ref_bucket_width_follows_the_segment_size_within_bounds() -> None:
    assert k.ref_bucket_width(128 << 20) == 1 << 20
    assert k.ref_bucket_width(1 << 20) == 128 << 10
    assert k.ref_bucket_width(8192) == 4096


def test_u64_codec() -> None:
    assert k.decode_u64(k.encode_u64(2**64 - 1)) == 2**64 - 1
