"""Tenants at the server's edge: who holds an API key, and what each may hold.

The composition root reads the keys (``SecretStr`` in the settings) and hands
this module plain values; the broker never reads settings itself. Keys are
kept only as SHA-256 digests and compared with :func:`hmac.compare_digest`
against every tenant's digest, so neither the time taken nor any repr or log
line tells anything about a key.

:class:`Quotas` counts what each tenant holds against its limits. It is
shared by the event loop and the executor threads, so it takes a lock.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from broker.errors import LimitExceeded, PermissionDenied, Unauthenticated
from broker.types import check_namespace

__all__ = ["KeyRing", "Quotas", "TenantLimits", "key_digest", "presented_key"]


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def presented_key(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> tuple[str | None, str | None]:
    """(API key, claimed tenant) from a call's metadata, for :meth:`KeyRing.authenticate`.

    The key comes as ``authorization: Bearer KEY`` or ``x-api-key: KEY``; the
    tenant the caller names, if any, as ``x-tidegate-tenant``. Binary values
    are not keys and are passed over. Both gRPC services read keys this way.
    """
    key = claimed = None
    for name, value in metadata or ():
        if not isinstance(value, str):
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                key = token.strip()
        elif name == "x-api-key":
            key = value.strip()
        elif name == "x-tidegate-tenant":
            claimed = value
    return key, claimed


class KeyRing:
    """API-key digests -> tenant names."""

    __slots__ = ("_digests",)

    def __init__(self, digests: Mapping[bytes, str]) -> None:
        for tenant in digests.values():
            check_namespace(tenant)
        self._digests = tuple(digests.items())

    @classmethod
    def from_keys(cls, keys: Mapping[str, str]) -> KeyRing:
        """From tenant -> plain key (the caller unwraps its SecretStr for this call only)."""
        return cls({key_digest(key): tenant for tenant, key in keys.items()})

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(sorted(tenant for _, tenant in self._digests))

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._digests)} keys)"

    def authenticate(self, key: str | None, claimed: str | None = None) -> str:
        """The tenant holding ``key``; ``claimed`` (a tenant the caller names) must be it."""
        if not key:
            raise Unauthenticated(
                "no API key: send it as metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'"
            )
        digest = key_digest(key)
        found: str | None = None
        for known, tenant in self._digests:  # no early exit: same work for every key
            if hmac.compare_digest(known, digest):
                found = tenant
        if found is None:
            raise Unauthenticated("the API key is not valid for any tenant")
        if claimed is not None and claimed != found:
            raise PermissionDenied(
                f"x-tidegate-tenant names tenant {claimed!r}, but the API key belongs to "
                "another tenant: a key acts only for its own tenant"
            )
        return found


@dataclass(frozen=True, slots=True)
class TenantLimits:
    """Per-tenant limits; None means no limit."""

    max_lite_topics: int | None = None
    max_subscriptions: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_lite_topics", "max_subscriptions"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 0):
                raise ValueError(f"{name} is {value!r}; it must be an integer >= 0 or None")


@dataclass
class Quotas:
    """Live lite-topics and subscriptions per tenant, checked against their limits.

    Lite-topic counts are exact at start (a registry scan per limited
    tenant). They grow by the new lite-topics each publish or subscribe
    creates, which the caller reserves before it writes, and drop by what
    each expiry pass reports it removed per tenant; a full rescan every
    ``recount_every`` passes (see :class:`broker.hub.Hub`) repairs the drift
    of a publish that raced an expiry.
    """

    limits: Mapping[str, TenantLimits] = field(default_factory=dict)
    _lite: dict[str, int] = field(default_factory=dict)
    _subs: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.limits = MappingProxyType(dict(self.limits))

    def limit(self, tenant: str) -> TenantLimits:
        return self.limits.get(tenant, _NO_LIMITS)

    def lite_topics(self, tenant: str) -> int:
        return self._lite.get(tenant, 0)

    def subscriptions(self, tenant: str) -> int:
        return self._subs.get(tenant, 0)

    def counts_lite_topics(self, tenant: str) -> bool:
        return self.limit(tenant).max_lite_topics is not None

    def set_lite_topics(self, tenant: str, count: int) -> None:
        with self._lock:
            self._lite[tenant] = count

    def reserve_lite_topics(self, tenant: str, new: int) -> None:
        """Count ``new`` lite-topics about to be created, or raise LimitExceeded."""
        limit = self.limit(tenant).max_lite_topics
        if limit is None or new <= 0:
            return
        with self._lock:
            have = self._lite.get(tenant, 0)
            if have + new > limit:
                raise LimitExceeded(
                    f"tenant {tenant!r} holds {have} live lite-topics and this call would create "
                    f"{new} more, above its limit max_lite_topics={limit}"
                )
            self._lite[tenant] = have + new

    def release_lite_topics(self, tenant: str, count: int) -> None:
        with self._lock:
            self._lite[tenant] = max(0, self._lite.get(tenant, 0) - count)

    def reserve_subscriptions(self, tenant: str, new: int) -> None:
        limit = self.limit(tenant).max_subscriptions
        with self._lock:
            have = self._subs.get(tenant, 0)
            if limit is not None and new > 0 and have + new > limit:
                raise LimitExceeded(
                    f"tenant {tenant!r} holds {have} subscriptions and this request adds {new}, "
                    f"above its limit max_subscriptions={limit}"
                )
            self._subs[tenant] = have + new

    def release_subscriptions(self, tenant: str, count: int) -> None:
        with self._lock:
            self._subs[tenant] = max(0, self._subs.get(tenant, 0) - count)


_NO_LIMITS = TenantLimits()
