"""Errors raised by the broker.

Hierarchy::

    BrokerError
    ├── InvalidArgument        a request broke a rule (bad name, offset, size ...)
    │   └── MessageTooLarge    a body above the configured maximum
    ├── NotFound               no such queue, lease or message
    ├── FailedPrecondition     the call is valid but not in the current state
    │   └── StoreClosed        the store was closed
    ├── LimitExceeded          a quota or capacity limit refuses the call
    ├── CorruptLog             a record in the middle of the log fails its checks
    ├── CorruptIndex           an index entry the broker wrote does not read back
    ├── Unauthenticated        no API key, or one no tenant holds (the gRPC layer)
    └── PermissionDenied       a valid key used beyond its tenant (the gRPC layer)

Every message names the offending value and the rule it broke. The gRPC layer
maps these classes to status codes in one table; nothing else translates them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BrokerError",
    "CorruptIndex",
    "CorruptLog",
    "FailedPrecondition",
    "InvalidArgument",
    "LimitExceeded",
    "MessageTooLarge",
    "NotFound",
    "PermissionDenied",
    "StoreClosed",
    "Unauthenticated",
]


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""


class InvalidArgument(BrokerError):
    """A request broke a validation rule; the message names the field and the rule."""


class MessageTooLarge(InvalidArgument):
    """A message body is larger than the store accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message body is {size} bytes, above the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class NotFound(BrokerError):
    """The queue, lease or message named does not exist."""


class FailedPrecondition(BrokerError):
    """The call is well formed but the current state does not allow it."""


class StoreClosed(FailedPrecondition):
    """The store has been closed."""

    def __init__(self) -> None:
        super().__init__("the store is closed")


class LimitExceeded(BrokerError):
    """A quota or capacity limit refuses the call; the message names the limit."""


class CorruptLog(BrokerError):
    """A record in the middle of the log fails its checks.

    The store refuses to open until told to skip it (``skip_corrupt=True``);
    nothing is dropped silently.
    """

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(
            f"corrupt record in {path} at byte offset {offset}: {reason}; "
            "open with skip_corrupt=True to skip it"
        )
        self.path = path
        self.offset = offset
        self.reason = reason


class Unauthenticated(BrokerError):
    """The call carries no API key, or one that no tenant holds (never quoted back)."""


class PermissionDenied(BrokerError):
    """The caller's key is valid but the call reaches beyond its tenant."""


class CorruptIndex(BrokerError):
    """An entry the broker wrote to its index does not read back (a damaged
    index): the message names what it belongs to. Nothing is guessed."""
