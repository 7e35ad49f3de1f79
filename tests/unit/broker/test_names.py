"""Queue names: the rules, the messages that name them, and the storage key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import InvalidArgument
from broker.types import (
    DLQ_PREFIX,
    QueueName,
    check_group,
    check_lite,
    check_namespace,
    check_topic,
    parent_prefix,
)

topics = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
lites = st.from_regex(r"[A-Za-z0-9_.:@=+-]{1,128}", fullmatch=True)
tenants = st.one_of(st.just(""), st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True))


@pytest.mark.parametrize("topic", ["chatbot", "a2a", "A", "x" * 64, "a.b-c_d", "0start"])
def test_valid_topics(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "hint"),
    [
        ("", "topic ''"),
        ("-lead", "'-lead'"),
        ("x" * 65, "[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
        ("sp ace", "topic name rule"),
        ("%DLQ%g", "topic name rule"),  # reserved: only the broker makes dead-letter queues
        ("chatbot/s-1", "give the parent as topic"),
    ],
)
def test_invalid_topics_name_value_and_rule(topic: str, hint: str) -> None:
    with pytest.raises(InvalidArgument, match="topic") as info:
        check_topic(topic)
    assert hint in str(info.value)
    assert repr(topic) in str(info.value)


@pytest.mark.parametrize("lite", ["s-1", "x" * 128, "a:b@c=d+e", "UPPER.lower_9"])
def test_valid_lites(lite: str) -> None:
    assert check_lite(lite) == lite


@pytest.mark.parametrize("lite", ["", "x" * 129, "a/b", "a b", "naïve", "semi;colon"])
def test_invalid_lites(lite: str) -> None:
    with pytest.raises(InvalidArgument, match=r"lite_topic .* breaks the lite-topic name rule"):
        check_lite(lite)


@pytest.mark.parametrize("tenant", ["", "acme", "free-tier", "a_1", "x" * 63])
def test_valid_namespaces(tenant: str) -> None:
    assert check_namespace(tenant) == tenant


@pytest.mark.parametrize("tenant", ["Acme", "-x", "x" * 64, "a.b", "a b"])
def test_invalid_namespaces(tenant: str) -> None:
    with pytest.raises(InvalidArgument, match=r"namespace .* tenant name rule"):
        check_namespace(tenant)


def test_non_str_names_are_refused_with_their_type() -> None:
    with pytest.raises(InvalidArgument, match="lite_topic is int 7; it must be a str"):
        check_lite(7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="group is NoneType"):
        check_group(None)  # type: ignore[arg-type]


def test_parse_forms() -> None:
    assert QueueName.parse("chatbot") == QueueName("", "chatbot")
    assert QueueName.parse("chatbot/s-1", "acme") == QueueName("acme", "chatbot", "s-1")
    with pytest.raises(InvalidArgument, match="ends with '/'"):
        QueueName.parse("chatbot/")
    with pytest.raises(InvalidArgument, match="more than one '/'"):
        QueueName.parse("a/b/c")
    with pytest.raises(InvalidArgument, match="topic ''"):
        QueueName.parse("/x")


def test_constructor_validates() -> None:
    with pytest.raises(InvalidArgument):
        QueueName("", "bad topic")
    with pytest.raises(InvalidArgument):
        QueueName("BAD", "t")
    with pytest.raises(InvalidArgument):
        QueueName("", "t", "a/b")


def test_str_shows_namespace_and_lite() -> None:
    assert str(QueueName("", "chatbot", "s-1")) == "chatbot/s-1"
    assert str(QueueName("acme", "chatbot")) == "acme:chatbot"
    assert str(QueueName("acme", "chatbot", "s-1")) == "acme:chatbot/s-1"


def test_dead_letter_queue_name() -> None:
    dlq = QueueName.dead_letter("acme", "workers")
    assert dlq == QueueName("acme", DLQ_PREFIX + "workers")
    assert dlq.is_dead_letter
    assert not dlq.is_lite
    with pytest.raises(InvalidArgument, match="group"):
        QueueName.dead_letter("acme", "bad group")


def test_keys_of_a_parent_prefix_its_lites_only() -> None:
    parent = QueueName("t", "chat").key
    assert QueueName("t", "chat", "s-1").key.startswith(parent + b"/")
    assert not QueueName("t", "chatbot").key.startswith(parent + b"/")
    assert not QueueName("t2", "chat", "s-1").key.startswith(parent)
    assert parent_prefix("t", "chat") == parent


@given(tenants, topics, st.one_of(st.just(""), lites))
def test_key_round_trip(namespace: str, topic: str, lite: str) -> None:
    name = QueueName(namespace, topic, lite)
    assert QueueName.from_key(name.key) == name


@given(tenants, topics, lites, tenants, topics, lites)
def test_distinct_names_have_distinct_keys(
    n1: str, t1: str, l1: str, n2: str, t2: str, l2: str
) -> None:
    a, b = QueueName(n1, t1, l1), QueueName(n2, t2, l2)
    assert (a == b) == (a.key == b.key)
