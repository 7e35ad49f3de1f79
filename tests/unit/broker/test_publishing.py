"""Publish requests are checked before anything is written."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.errors import InvalidArgument, MessageTooLarge
from broker.publishing import Preparer
from broker.types import PublishRequest, QueueName

prepare = Preparer(max_lite_topics=3, max_message_bytes=100)


def test_without_lite_topics_the_parent_queue_is_the_target() -> None:
    keys, properties, body = prepare(PublishRequest("chatbot", b"x", namespace="acme"))
    assert keys == (QueueName("acme", "chatbot").key,)
    assert properties == b"\x00\x00"
    assert body == b"x"


def test_each_lite_topic_is_a_target_in_request_order() -> None:
    keys, _, _ = prepare(PublishRequest("chatbot", b"x", ("s-2", "s-1")))
    assert keys == (QueueName("", "chatbot", "s-2").key, QueueName("", "chatbot", "s-1").key)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (PublishRequest("bad topic", b""), "topic 'bad topic'"),
        (PublishRequest("t", b"", ("a/b",)), "lite_topic 'a/b'"),
        (PublishRequest("t", b"", (["x"],)), "lite_topic is list"),  # type: ignore[arg-type]
        (PublishRequest("t", b"", ("ok", "a b")), "lite_topic 'a b'"),
        (PublishRequest("t", b"", ("a", "b", "a")), "lists 'a' more than once"),
        (PublishRequest("t", b"", ("a", "b", "c", "d")), "lists 4 names; at most 3"),
        (PublishRequest("t", b"", "abc"), "lite_topics is the string 'abc'"),  # type: ignore[arg-type]
        (PublishRequest("t", b"", namespace="NS"), "namespace 'NS'"),
        (PublishRequest("t", "text"), "body is str"),  # type: ignore[arg-type]
        (PublishRequest("t", 12), "body is int"),  # type: ignore[arg-type]
        (PublishRequest("t", b"", properties={"": "v"}), "property key ''"),
    ],
)
def test_bad_requests_are_named(request_: PublishRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        prepare(request_)


@pytest.mark.parametrize("body", [b"x" * 101, bytearray(101), memoryview(b"y" * 101)])
def test_too_large_bodies_name_size_and_limit(body: bytes) -> None:
    with pytest.raises(MessageTooLarge, match="101 bytes, above the limit of 100 bytes") as info:
        prepare(PublishRequest("t", body))
    assert (info.value.size, info.value.limit) == (101, 100)


def test_iterable_bodies_pass_through_unread() -> None:
    def pieces() -> Iterator[bytes]:
        if stream is not None:  # only true once the generator runs
            raise AssertionError("read too early")
        yield b""

    stream: Iterator[bytes] | None = None
    stream = pieces()
    _, _, body = prepare(PublishRequest("t", stream))
    assert body is stream


def test_a_cached_lite_name_is_still_the_same_key() -> None:
    first, _, _ = prepare(PublishRequest("chatbot", b"x", ("s-1",)))
    again, _, _ = prepare(PublishRequest("chatbot", b"y", ("s-1",), namespace="acme"))
    assert first == (QueueName("", "chatbot", "s-1").key,)
    assert again == (QueueName("acme", "chatbot", "s-1").key,)
    with pytest.raises(InvalidArgument):
        prepare(PublishRequest("chatbot", b"x", ("bad name",)))
