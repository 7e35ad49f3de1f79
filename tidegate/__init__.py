"""tidegate: a durable, session-aware request queue and fair GPU admission controller.

The public API is what ``__all__`` lists; everything else is internal. The
clients (and grpc under them) load on first use, so ``import tidegate`` and
``tidegate --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tidegate.errors import (
    CallFailed,
    ClientClosed,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServerError,
    TidegateError,
    Unauthenticated,
    Unavailable,
    UsageError,
)
from tidegate.options import ApiKey, Retry, Tls
from tidegate.values import (
    Message,
    Notice,
    Outgoing,
    PublishResult,
    QueueInfo,
    QueueRef,
    ReadResult,
    ServerStatus,
    Start,
    StartKind,
)

if TYPE_CHECKING:
    from tidegate.aio import AsyncClient
    from tidegate.aio_subscription import AsyncSubscription
    from tidegate.client import Client
    from tidegate.subscription import Subscription

__all__ = [
    "ApiKey",
    "AsyncClient",
    "AsyncSubscription",
    "CallFailed",
    "Client",
    "ClientClosed",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "Message",
    "NotFound",
    "Notice",
    "Outgoing",
    "PermissionDenied",
    "PublishResult",
    "QueueInfo",
    "QueueRef",
    "ReadResult",
    "ResourceExhausted",
    "Retry",
    "ServerError",
    "ServerStatus",
    "Start",
    "StartKind",
    "Subscription",
    "TidegateError",
    "Tls",
    "Unauthenticated",
    "Unavailable",
    "UsageError",
    "__version__",
]

__version__ = "0.1.0"

_LAZY = {
    "Client": "tidegate.client",
    "AsyncClient": "tidegate.aio",
    "Subscription": "tidegate.subscription",
    "AsyncSubscription": "tidegate.aio_subscription",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tidegate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
