"""BrokerSettings: every knob of one store, validated once, passed down.

The composition root builds this from YAML/env (pydantic lives there, not
here); the broker only ever sees this frozen value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from broker.errors import InvalidArgument
from broker.log.commitlog import FsyncPolicy, LogConfig
from broker.types import check_topic

__all__ = ["BrokerSettings"]

MiB = 1024 * 1024
# The log's record limit: a chunk or an inline message plus its names and
# properties (at most MAX_LITE_TOPICS names of ~200 bytes, 1 MiB of
# properties) must fit one record.
_RECORD_BYTES = 16 * MiB
_MAX_CHUNK_BYTES = 8 * MiB


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgument(f"{name} is {value!r}; it must be a finite number > 0")


def _ttl(name: str, value: float | None) -> None:
    if value is not None:
        _positive(name, value)


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Settings of one broker store.

    Durability: with ``fsync=always`` a publish returns only after its log
    record is fsynced; with ``interval`` a machine crash loses at most about
    ``fsync_interval_s`` of acknowledged publishes (a process crash loses
    nothing: the page cache survives it).
    """

    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_s: float = 0.1
    segment_bytes: int = 128 * MiB
    retention_bytes: int | None = None
    retention_s: float | None = None
    skip_corrupt: bool = False
    max_message_bytes: int = 256 * MiB
    chunk_bytes: int = 1 * MiB  # bodies above this are stored as chunk records
    default_ttl_s: float | None = 3600.0  # idle lite-topics go after this (None: never)
    ttl_by_topic: Mapping[str, float | None] = field(default_factory=dict)  # per parent topic
    expiry_granularity_s: float = 1.0  # expiry deadlines round up to this
    hot_topics: int = 4096  # registry entries cached in Python
    max_attempts: int = 16  # deliveries before a message goes to its group's DLQ
    max_lite_topics: int = 1024  # lite-topics one message may be dispatched to
    max_read_messages: int = 10_000  # per read or lease call
    index_memory_bytes: int = 64 * MiB  # RocksDB memtables, all column families
    index_cache_bytes: int = 16 * MiB  # RocksDB block cache

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "fsync", FsyncPolicy(self.fsync))
        except ValueError:
            choices = ", ".join(p.value for p in FsyncPolicy)
            raise InvalidArgument(f"fsync is {self.fsync!r}; it must be one of {choices}") from None
        _positive("fsync_interval_s", self.fsync_interval_s)
        _positive("expiry_granularity_s", self.expiry_granularity_s)
        _ttl("default_ttl_s", self.default_ttl_s)
        for topic, ttl in self.ttl_by_topic.items():
            check_topic(topic)
            _ttl(f"ttl_by_topic[{topic!r}]", ttl)
        object.__setattr__(self, "ttl_by_topic", MappingProxyType(dict(self.ttl_by_topic)))
        if not 4096 <= self.chunk_bytes <= _MAX_CHUNK_BYTES:
            raise InvalidArgument(
                f"chunk_bytes is {self.chunk_bytes}; it must be in [4096, {_MAX_CHUNK_BYTES}]"
            )
        if self.max_message_bytes < 1:
            raise InvalidArgument(f"max_message_bytes is {self.max_message_bytes}; it must be >= 1")
        for name in (
            "hot_topics",
            "max_attempts",
            "max_lite_topics",
            "max_read_messages",
            "index_memory_bytes",
            "index_cache_bytes",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InvalidArgument(f"{name} is {value!r}; it must be an integer >= 1")
        if self.max_lite_topics > 4096:
            raise InvalidArgument(
                f"max_lite_topics is {self.max_lite_topics}; it must be <= 4096 "
                "(one record lists every queue it is dispatched to)"
            )
        self.log_config()  # validates segment_bytes, retention and friends

    def ttl_for(self, topic: str) -> float | None:
        """Idle TTL of lite-topics under parent ``topic``."""
        return self.ttl_by_topic.get(topic, self.default_ttl_s)

    def log_config(self) -> LogConfig:
        return LogConfig(
            segment_bytes=self.segment_bytes,
            fsync=self.fsync,
            fsync_interval_s=self.fsync_interval_s,
            retention_bytes=self.retention_bytes,
            retention_s=self.retention_s,
            skip_corrupt=self.skip_corrupt,
            max_record_bytes=_RECORD_BYTES,
        )
