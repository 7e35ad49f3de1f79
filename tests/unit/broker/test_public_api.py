"""The broker package's declared public API (what the rest of the project imports)."""

from __future__ import annotations

import broker


def test_all_lists_the_public_api() -> None:
    assert sorted(broker.__all__) == [
        "Broker",
        "BrokerError",
        "BrokerSettings",
        "BrokerStats",
        "CorruptIndex",
        "CorruptLog",
        "DLQ_PREFIX",
        "ExpireReport",
        "FailedPrecondition",
        "FsyncPolicy",
        "InvalidArgument",
        "Lease",
        "LimitExceeded",
        "Message",
        "MessageTooLarge",
        "NotFound",
        "PublishRequest",
        "PublishResult",
        "QueueInfo",
        "QueueName",
        "StoreClosed",
    ]
    for name in broker.__all__:
        assert getattr(broker, name) is not None


def test_errors_share_one_root() -> None:
    for name in ("CorruptIndex", "CorruptLog", "FailedPrecondition", "InvalidArgument", "NotFound"):
        assert issubclass(getattr(broker, name), broker.BrokerError)
    assert issubclass(broker.MessageTooLarge, broker.InvalidArgument)
    assert issubclass(broker.StoreClosed, broker.FailedPrecondition)
