"""One worker's Lease stream as the runtime sees it: credits, leases, an outbox.

The runtime decides (grants, stop orders, rejections) synchronously and
drops them in the session's outbox; the servicer's writer drains it.
A grant goes in as a :class:`PendingGrant` and is prepared (payload read,
resume output gathered) only when the writer reaches it, so a decision
never waits on I/O and a grant whose lease was revoked meanwhile is simply
skipped.

A stream that breaks may leave its session *held* (see
:meth:`scheduler.runtime.core.Core.detach`): closed, its running leases
kept for ``lease_s`` from ``broke_at`` until the worker reconnects and a new
session takes them over under the same key.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from scheduler.runtime.live import Lease
from scheduler.runtime.values import Outgoing, WorkerHello

__all__ = ["PendingGrant", "WorkerSession"]


@dataclass(frozen=True, slots=True)
class PendingGrant:
    lease: Lease


class WorkerSession:
    """State of one Lease stream (see the module docstring)."""

    __slots__ = (
        "_items",
        "_wake",
        "broke_at",
        "closed",
        "credits",
        "draining",
        "error",
        "granted",
        "hello",
        "key",
        "last_heard",
        "lease_s",
        "leases",
        "leaving",
        "tenant",
    )

    def __init__(
        self, tenant: str, hello: WorkerHello, key: str, lease_s: float, now: float
    ) -> None:
        self.tenant = tenant
        self.hello = hello
        self.key = key  # the policy's worker id: unique per stream
        self.lease_s = lease_s
        self.credits = 0
        self.draining = False  # the worker is leaving: grant it nothing more
        self.granted = 0
        self.leases: dict[str, Lease] = {}  # request id -> its current lease here
        self.last_heard = now
        self.closed = False
        self.error: BaseException | None = None  # why the runtime closed it, if it did
        self.leaving = False  # the worker said it stops everything: no grace at its end
        self.broke_at: float | None = None  # held: when its stream broke
        self._items: deque[Outgoing | PendingGrant] = deque()
        self._wake = asyncio.Event()

    def push(self, item: Outgoing | PendingGrant) -> None:
        if not self.closed:
            self._items.append(item)
            self._wake.set()

    def close(self, error: BaseException | None = None) -> None:
        """No more items; the writer ends (raising ``error`` if given)."""
        if not self.closed:
            self.closed = True
            self.error = error
            self._items.clear()
            self._wake.set()

    async def next(self) -> Outgoing | PendingGrant | None:
        """The next item, waiting for one; None once closed."""
        while True:
            if self.closed:
                return None
            if self._items:
                return self._items.popleft()
            self._wake.clear()
            await self._wake.wait()

    def __repr__(self) -> str:
        return (
            f"WorkerSession({self.key!r}, credits={self.credits}, leases={len(self.leases)}"
            f"{', draining' if self.draining else ''})"
        )
