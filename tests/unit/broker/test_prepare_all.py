"""Preparer.all: a batch checked run by run gives what checking each request gives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import InvalidArgument, MessageTooLarge
from broker.publishing import Preparer
from broker.types import PublishRequest

prepare = Preparer(max_lite_topics=3, max_message_bytes=100)

# Shared objects, as a server's batch shares them between messages.
LITES = [(), ("s-1",), ("s-1", "s-2"), ("bad name",)]
PROPS = [{}, {}, {"k": "v"}, {"": "bad key"}]
bodies = st.one_of(st.binary(max_size=100), st.just(b"x" * 101), st.just(bytearray(b"ab")))
requests = st.builds(
    PublishRequest,
    st.sampled_from(["t", "u"]),
    bodies,
    st.sampled_from(LITES),
    st.sampled_from(PROPS),
    st.sampled_from(["", "acme"]),
)


def _each(batch: list[PublishRequest]) -> object:
    try:
        return [prepare(r) for r in batch]
    except InvalidArgument as exc:  # MessageTooLarge included
        return (type(exc), str(exc))


def _all(batch: list[PublishRequest]) -> object:
    try:
        return prepare.all(batch)
    except InvalidArgument as exc:
        return (type(exc), str(exc))


@given(st.lists(requests, max_size=12))
def test_all_matches_one_by_one(batch: list[PublishRequest]) -> None:
    assert _all(batch) == _each(batch)


def test_a_run_checks_each_body() -> None:
    lites = ("s-1",)
    with pytest.raises(MessageTooLarge, match="101 bytes"):
        prepare.all([PublishRequest("t", b"ok", lites), PublishRequest("t", b"x" * 101, lites)])
    with pytest.raises(InvalidArgument, match="body is str"):
        prepare.all([PublishRequest("t", b"ok", lites), PublishRequest("t", "s", lites)])  # type: ignore[arg-type]


def test_a_run_shares_its_keys() -> None:
    lites = ("s-1", "s-2")
    out = prepare.all([PublishRequest("t", bytes([i]), lites) for i in range(4)])
    assert len({id(keys) for keys, _, _ in out}) == 1
    assert [body for _, _, body in out] == [bytes([i]) for i in range(4)]
