"""Names are checked with the server's rules before anything is sent."""

from __future__ import annotations

import pytest

from tidegate.errors import InvalidArgument
from tidegate.values import Outgoing, QueueRef, Start, StartKind


def test_queue_ref_parses_and_prints_topic_slash_lite() -> None:
    assert QueueRef.parse("chatbot/s-1") == QueueRef("chatbot", "s-1")
    assert str(QueueRef("chatbot", "s-1")) == "chatbot/s-1"
    assert str(QueueRef.parse("chatbot")) == "chatbot"
    assert QueueRef("%DLQ%workers").topic == "%DLQ%workers"


@pytest.mark.parametrize(
    ("topic", "lite"), [("", "x"), ("-bad", "x"), ("ok", "sp ace"), ("ok", "x" * 129), ("a/b", "")]
)
def test_bad_names_are_refused_with_the_rule(topic: str, lite: str) -> None:
    with pytest.raises(InvalidArgument, match="name rule"):
        QueueRef(topic, lite)


def test_start_parse_reads_the_command_line_words() -> None:
    assert Start.parse("earliest") == Start.earliest()
    assert Start.parse("LATEST").kind is StartKind.LATEST
    assert Start.parse("42") == Start.at(42)
    with pytest.raises(InvalidArgument, match="earliest, latest or an offset"):
        Start.parse("soon")
    with pytest.raises(InvalidArgument, match=">= 0"):
        Start.parse("-1")


def test_start_of_takes_what_a_caller_would_pass() -> None:
    assert Start.of(None) == Start.default()
    assert Start.of("earliest") == Start.earliest()
    assert Start.of(7) == Start.at(7)
    assert Start.of(Start.latest()) == Start.latest()
    with pytest.raises(InvalidArgument, match="start is True"):
        Start.of(True)
    with pytest.raises(InvalidArgument, match=">= 0"):
        Start.of(-3)


def test_outgoing_checks_lites_reply_to_and_properties() -> None:
    message = Outgoing("agent", b"body", ("inbox",), {"k": "v"}, "a2a/task-1")
    assert message.size == 4
    assert "body" not in repr(message)
    with pytest.raises(InvalidArgument, match=r"lite_topics\[1\]"):
        Outgoing("agent", b"", ("ok", "not ok"))
    with pytest.raises(InvalidArgument, match="reply_to"):
        Outgoing("agent", b"", reply_to="a2a")
    with pytest.raises(InvalidArgument, match="properties"):
        Outgoing("agent", b"", properties={"k": 1})  # type: ignore[dict-item]
