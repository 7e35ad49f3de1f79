"""tidegate's durable broker: commit log, multi-dispatch index, lite-topics.

The public, in-process API the gRPC layer and the benchmarks build on::

    from broker import Broker, BrokerSettings, PublishRequest, QueueName

    with Broker.open("data", BrokerSettings(fsync="interval")) as broker:
        result = broker.publish("chatbot", b"hi", lite_topics=["s-1"])
        messages = broker.read(QueueName("", "chatbot", "s-1"), from_offset=0)

Everything importable from here is listed in ``__all__`` (tested); the
modules under it are internals and may change.
"""

from typing import TYPE_CHECKING, Any

from broker.errors import (
    BrokerError,
    CorruptIndex,
    CorruptLog,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    MessageTooLarge,
    NotFound,
    StoreClosed,
)
from broker.types import (
    DLQ_PREFIX,
    BrokerStats,
    ExpireReport,
    Lease,
    Message,
    PublishRequest,
    PublishResult,
    QueueInfo,
    QueueName,
)

__all__ = [
    "DLQ_PREFIX",
    "Broker",
    "BrokerError",
    "BrokerSettings",
    "BrokerStats",
    "CorruptIndex",
    "CorruptLog",
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

if TYPE_CHECKING:
    from broker.log.commitlog import FsyncPolicy
    from broker.settings import BrokerSettings
    from broker.store import Broker

# The store (RocksDB, the commit log) loads on first use: importing the wire
# contract (broker.proto, which the client SDK uses) must not load it.
_LAZY = {
    "Broker": "broker.store",
    "BrokerSettings": "broker.settings",
    "FsyncPolicy": "broker.log.commitlog",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'broker' has no attribute {name!r}")
    import importlib  # noqa: PLC0415 - only on first use of a lazy name

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
