"""pub/sub helpers: where the key comes from, the exact JSON lines, stdin batching."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import pytest

from tidegate import scripting
from tidegate.errors import UsageError
from tidegate.values import Message, PublishResult


def ns(**kwargs: object) -> argparse.Namespace:
    return argparse.Namespace(**{"api_key_file": None, **kwargs})


def test_api_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert scripting.api_key(ns(), {"TIDEGATE_API_KEY": "env-key"}).reveal() == "env-key"
    path = tmp_path / "k"
    path.write_text("file-key\n")
    key = scripting.api_key(ns(api_key_file=str(path)), {"TIDEGATE_API_KEY": "env-key"})
    assert key.reveal() == "file-key"


def test_a_missing_key_names_both_sources() -> None:
    with pytest.raises(UsageError) as info:
        scripting.api_key(ns(), {})
    assert "TIDEGATE_API_KEY" in str(info.value)
    assert "--api-key-file" in str(info.value)


def test_pub_line_is_the_contract_format() -> None:
    result = PublishResult("chatbot", ("s-1",), (5,), 1.0, False, 9, 3)
    line = scripting.pub_line(result, "s-1", b"abc")
    assert line == (
        '{"topic": "chatbot", "lite_topic": "s-1", "offset": 5, '
        f'"sha256": "{hashlib.sha256(b"abc").hexdigest()}"}}'
    )


def test_sub_line_is_the_contract_format() -> None:
    message = Message("chatbot", "s-1", 7, b"xyz", attempt=2, size=3)
    assert list(json.loads(scripting.sub_line(message))) == [
        "topic",
        "lite_topic",
        "offset",
        "sha256",
        "attempt",
    ]
    assert json.loads(scripting.sub_line(message)) == {
        "topic": "chatbot",
        "lite_topic": "s-1",
        "offset": 7,
        "sha256": hashlib.sha256(b"xyz").hexdigest(),
        "attempt": 2,
    }


def test_generated_bodies_have_the_size_and_differ() -> None:
    bodies = list(scripting._generated(20, 16))
    assert all(len(b) == 16 for b in bodies)
    assert len(set(bodies)) == 20


def test_stdin_lines_are_messages_without_their_line_ends() -> None:
    read, write = os.pipe()
    with os.fdopen(write, "wb") as sink:
        sink.write(b"one\r\ntwo\n\nlast")
    try:
        got = [line for batch in scripting._stdin_batches(read) for line in batch]
    finally:
        os.close(read)
    assert got == [b"one", b"two", b"", b"last"]


def test_stdin_lines_that_wait_are_sent_alone() -> None:
    read, write = os.pipe()
    try:
        batches = scripting._stdin_batches(read)
        os.write(write, b"a\nb\n")
        assert next(batches) == [b"a", b"b"]  # what had arrived, without waiting for more
        os.write(write, b"c\n")
        assert next(batches) == [b"c"]
        os.close(write)
        write = -1
        assert list(batches) == []
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
