"""Errors of the tidegate SDK and command line.

Hierarchy::

    TidegateError
    ├── UsageError              a command-line argument or file broke a rule
    ├── ClientClosed            the client or subscription was closed before the call
    └── CallFailed              a call failed; ``code`` names the gRPC status
        ├── InvalidArgument     INVALID_ARGUMENT, OUT_OF_RANGE (also raised before sending)
        ├── NotFound            NOT_FOUND
        ├── FailedPrecondition  FAILED_PRECONDITION, ABORTED
        ├── ResourceExhausted   RESOURCE_EXHAUSTED: a tenant or size limit, named
        ├── Unauthenticated     UNAUTHENTICATED: no API key, or an unknown one
        ├── PermissionDenied    PERMISSION_DENIED: beyond the key's tenant
        ├── Unavailable         UNAVAILABLE: unreachable or draining (the SDK retries these)
        ├── DeadlineExceeded    DEADLINE_EXCEEDED, or no reply in time
        └── ServerError         INTERNAL, DATA_LOSS, UNKNOWN, UNIMPLEMENTED, CANCELLED

Each package keeps its own tree (``broker.errors``, ``scheduler.errors``); the
command line translates all of them into one line on stderr and an exit code.
:func:`from_rpc_error` is the one place where a ``grpc.RpcError`` becomes one
of these classes, and :func:`refused` the one where a refusal that a stream
reports without ending (a subscription add a tenant limit refused) does. Both
read the status by name, so this module does not import grpc (``tidegate
--help`` stays fast). No message ever holds the API key: the
server never quotes it back and the SDK never puts it into one.
"""

from __future__ import annotations

__all__ = [
    "STATUS_NAMES",
    "CallFailed",
    "ClientClosed",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServerError",
    "TidegateError",
    "Unauthenticated",
    "Unavailable",
    "UsageError",
    "from_rpc_error",
    "refused",
]

# gRPC status names by number (the numbers are fixed by the gRPC protocol);
# StreamNotice carries the number.
STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


class TidegateError(Exception):
    """Root of every error the SDK and the command line raise on purpose."""


class UsageError(TidegateError):
    """A command-line argument, or a file it names, is not acceptable."""


class ClientClosed(TidegateError):  # noqa: N818 - says what happened
    """The client (or the subscription) was closed; open a new one."""


class CallFailed(TidegateError):  # noqa: N818 - says what happened
    """A call failed. ``code`` is the gRPC status name (``"NOT_FOUND"`` ...)."""

    code: str = "UNKNOWN"
    #: Whether trying the same call again later may succeed (the SDK does so itself).
    retryable: bool = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(CallFailed):
    """A field broke a rule; the message names the field and the rule."""

    code = "INVALID_ARGUMENT"


class NotFound(CallFailed):
    """The queue or message does not exist (never published, or expired)."""

    code = "NOT_FOUND"


class FailedPrecondition(CallFailed):
    """Valid, but not in this state (an ack of a message not in flight ...)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(CallFailed):
    """A tenant limit or a size limit refused the call; the message names it."""

    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(CallFailed):
    """No API key, or a key no tenant holds."""

    code = "UNAUTHENTICATED"


class PermissionDenied(CallFailed):
    """A valid key used beyond its tenant, or a reserved name."""

    code = "PERMISSION_DENIED"


class Unavailable(CallFailed):
    """The server cannot be reached or is shutting down.

    The SDK retries these with backoff (see ``Retry``); this reaches the
    caller once the retry budget is spent, or when a call cannot be replayed.
    """

    code = "UNAVAILABLE"
    retryable = True


class DeadlineExceeded(CallFailed):
    """The call, or the wait for a reply, ran out of time."""

    code = "DEADLINE_EXCEEDED"


class ServerError(CallFailed):
    """The server failed (a bug or a storage failure); nothing acknowledged is lost."""

    code = "INTERNAL"


# Status name -> class. Every status the server can send has a row; an
# unknown name (a newer server) is a ServerError.
_BY_STATUS: dict[str, type[CallFailed]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "NOT_FOUND": NotFound,
    "ALREADY_EXISTS": FailedPrecondition,
    "FAILED_PRECONDITION": FailedPrecondition,
    "ABORTED": FailedPrecondition,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": PermissionDenied,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "INTERNAL": ServerError,
    "DATA_LOSS": ServerError,
    "UNKNOWN": ServerError,
    "UNIMPLEMENTED": ServerError,
    "CANCELLED": ServerError,
}


def from_rpc_error(exc: BaseException, *, method: str, server: str) -> CallFailed:
    """The SDK error for a failed gRPC call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``).

    ``method`` and ``server`` go into the message so a one-line report says
    what failed where; the server's own text (which names the field and the
    rule) follows. Newlines are folded so the message stays one line.
    """
    code_of = getattr(exc, "code", None)
    details_of = getattr(exc, "details", None)
    status = code_of() if callable(code_of) else None
    name = str(getattr(status, "name", "UNKNOWN"))
    details = details_of() if callable(details_of) else None
    text = " ".join(str(details or "no details").split())
    cls = _BY_STATUS.get(name, ServerError)
    if cls is Unavailable:
        message = f"{method}: server {server} unavailable: {text}"
    elif cls is Unauthenticated:
        message = f"{method}: the server {server} refused the API key ({name}): {text}"
    else:
        message = f"{method} failed ({name}): {text}"
    return cls(message, code=name)


def refused(code: str, details: str, *, method: str) -> CallFailed:
    """The SDK error for a refusal a stream reported without ending (``code`` is
    the status name, e.g. a Subscribe add refused with ``RESOURCE_EXHAUSTED``)."""
    text = " ".join(details.split()) or "no details"
    cls = _BY_STATUS.get(code, ServerError)
    return cls(f"{method} refused ({code}): {text}", code=code)
