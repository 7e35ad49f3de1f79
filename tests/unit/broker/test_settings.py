"""BrokerSettings: validated once, messages naming the field, value and rule."""

from __future__ import annotations

import pytest

from broker.errors import InvalidArgument
from broker.log.commitlog import FsyncPolicy
from broker.settings import BrokerSettings


def test_defaults_are_durable_and_bounded() -> None:
    settings = BrokerSettings()
    assert settings.fsync is FsyncPolicy.ALWAYS
    assert settings.max_message_bytes == 256 * 1024 * 1024
    assert settings.chunk_bytes == 1024 * 1024
    assert settings.log_config().fsync is FsyncPolicy.ALWAYS


def test_fsync_accepts_the_yaml_spelling() -> None:
    assert BrokerSettings(fsync="interval").fsync is FsyncPolicy.INTERVAL  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="fsync is 'sometimes'; it must be one of always"):
        BrokerSettings(fsync="sometimes")  # type: ignore[arg-type]


def test_ttl_overrides_by_parent_topic() -> None:
    settings = BrokerSettings(default_ttl_s=60.0, ttl_by_topic={"a2a": 5.0, "keep": None})
    assert settings.ttl_for("chatbot") == 60.0
    assert settings.ttl_for("a2a") == 5.0
    assert settings.ttl_for("keep") is None
    with pytest.raises(TypeError):
        settings.ttl_by_topic["x"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_bytes": 100}, "chunk_bytes is 100; it must be in"),
        ({"max_message_bytes": 0}, "max_message_bytes is 0"),
        ({"default_ttl_s": 0.0}, "default_ttl_s is 0.0; it must be a finite number > 0"),
        ({"ttl_by_topic": {"bad topic": 1.0}}, "topic 'bad topic'"),
        ({"ttl_by_topic": {"t": -1.0}}, r"ttl_by_topic\['t'\] is -1.0"),
        ({"hot_topics": 0}, "hot_topics is 0; it must be an integer >= 1"),
        ({"max_attempts": 0}, "max_attempts is 0"),
        ({"max_lite_topics": 5000}, "max_lite_topics is 5000; it must be <= 4096"),
        ({"expiry_granularity_s": float("inf")}, "expiry_granularity_s is inf"),
        ({"segment_bytes": 10}, "segment_bytes is 10"),
        ({"retention_bytes": -1}, "retention_bytes is -1"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        BrokerSettings(**kwargs)  # type: ignore[arg-type]
