"""How a client connects: the API key, TLS, and the retry policy.

:class:`ApiKey` keeps the key out of every repr, str and log line; the only
way to see it is :meth:`ApiKey.reveal`, which the SDK calls once to build the
call metadata. :class:`Retry` and :class:`Backoff` are pure: the delay comes
from a seeded ``random.Random`` and the give-up decision from a ``now`` the
caller passes in, so both are tested without sleeping.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from tidegate.errors import InvalidArgument, UsageError

__all__ = ["ApiKey", "Backoff", "Retry", "Tls"]


class ApiKey:
    """A tenant's API key that never shows itself (compare pydantic's ``SecretStr``)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise InvalidArgument("api_key must be a string")
        value = value.strip()
        # Metadata values must be printable ASCII; say so without quoting the key.
        if not value or not all(" " < ch < "\x7f" for ch in value):
            raise InvalidArgument(
                "api_key is empty or holds characters other than printable ASCII "
                "without spaces (the key itself is not shown)"
            )
        self._value = value

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ApiKey:
        """The key from a file (surrounding whitespace and the newline are dropped)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise UsageError(
                f"api key file {os.fspath(path)!r}: cannot read it: {reason}"
            ) from None
        try:
            return cls(text)
        except InvalidArgument as exc:
            raise UsageError(f"api key file {os.fspath(path)!r}: {exc}") from None

    def reveal(self) -> str:
        """The key itself, for the call metadata only."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('**********')"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("an ApiKey is not pickled: it would write the key out")


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS for the channel. PEM contents, not paths (see :meth:`from_files`).

    ``root_certificates``: the CA the server's certificate must chain to
    (None: the system's roots). ``certificate_chain`` + ``private_key``: the
    client's own certificate, for servers that require mutual TLS.
    ``server_name``: check the server's certificate for this name instead of
    the host in the address (tests with a self-made certificate, tunnels).
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise InvalidArgument(
                "tls: give certificate_chain and private_key together (mutual TLS) or neither"
            )

    @classmethod
    def from_files(
        cls,
        *,
        ca: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
    ) -> Tls:
        def read(what: str, path: str | os.PathLike[str] | None) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(
                    f"tls {what} file {os.fspath(path)!r}: cannot read it: {exc.strerror}"
                ) from None

        return cls(read("ca", ca), read("cert", cert), read("key", key), server_name)


@dataclass(frozen=True, slots=True)
class Retry:
    """Reconnect and retry policy: exponential backoff with jitter.

    The n-th wait is ``min(max_s, initial_s * multiplier**n)`` shortened by
    up to ``jitter`` of itself at random, so many clients that lost the same
    server do not come back in lockstep. ``give_up_s``: how long to keep
    trying without success before the call fails with ``Unavailable``
    (None: never give up).
    """

    initial_s: float = 0.05
    max_s: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5
    give_up_s: float | None = 30.0

    def __post_init__(self) -> None:
        for name in ("initial_s", "max_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"retry {name} is {value}; it must be > 0")
        if self.max_s < self.initial_s:
            raise InvalidArgument(
                f"retry max_s is {self.max_s}; it must be >= initial_s ({self.initial_s})"
            )
        if not self.multiplier >= 1:
            raise InvalidArgument(f"retry multiplier is {self.multiplier}; it must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument(f"retry jitter is {self.jitter}; it must be in [0, 1]")
        if self.give_up_s is not None and not self.give_up_s >= 0:
            raise InvalidArgument(f"retry give_up_s is {self.give_up_s}; it must be >= 0")

    def backoff(self, rng: random.Random) -> Backoff:
        return Backoff(self, rng)


class Backoff:
    """The state of one retry sequence (one call, or one subscription's reconnects)."""

    __slots__ = ("_failures", "_policy", "_rng", "_since")

    def __init__(self, policy: Retry, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._failures = 0
        self._since: float | None = None

    def failed(self, now: float) -> float | None:
        """After a failure at ``now``: seconds to wait before the next try, or
        None when the policy gives up (no success for ``give_up_s``)."""
        policy = self._policy
        if self._since is None:
            self._since = now
        limit = policy.give_up_s
        if limit is not None and now - self._since >= limit:
            return None
        cap = min(policy.max_s, policy.initial_s * policy.multiplier ** min(self._failures, 64))
        self._failures += 1
        delay = cap * (1.0 - policy.jitter * self._rng.random())
        if limit is not None:
            delay = min(delay, max(0.0, self._since + limit - now))
        return delay

    def succeeded(self) -> None:
        """A try got through: the next failure starts a fresh sequence."""
        self._failures = 0
        self._since = None

    @property
    def failures(self) -> int:
        return self._failures
