"""Draining a worker: take no new request, finish what it runs, then it may stop.

:meth:`workers.worker.Worker.stop` ends a worker at once: its runs are
cancelled and the server re-queues them (they resume elsewhere from the
stored output). Shrinking the fleet should not cost that, so a worker built
with a :class:`DrainGate` between it and its Lease streams can be drained::

    gate = DrainGate()
    worker = Worker(config, backend, gate.wrap(client.lease), clock=clock)
    ...
    gate.drain()                  # on the worker's loop
    await gate.idle.wait()        # every lease it held is over, settled by the server
    worker.stop()

The Lease protocol has no way to take credits back (credits only add up),
so the gate does what the worker's side can: once draining,

* no credit goes to the server any more (reports go out with ``credits=0``,
  and a stream opened while draining opens with none), so the server's
  credits for this worker only run down;
* a grant that still comes (the server may use the credits it holds) is
  handed back at once with ``stopped`` and the output tokens the request had
  made before (the protocol's hand-back: no attempt or failure is counted and
  the request goes back to its place in the queue, to run on another worker;
  the server counts it as a preemption). At most the credits the server
  held when the drain began come back this way.

``idle`` is set once, draining, the stream holds no lease: every grant the
worker ran has been completed and settled (the server stored it), stopped,
failed, cancelled or fenced, or the stream is gone (the server released its
leases). Then stopping the worker loses no work.
"""

from __future__ import annotations

import asyncio
import dataclasses

from tidegate.client import (
    LeaseGrant,
    LeaseOpened,
    LeaseOrder,
    LeaseRejected,
    LeaseSettled,
    LeaseStop,
    Stopped,
    WorkerHello,
    WorkerReport,
)
from workers.worker import LeaseConnector, LeaseLink

__all__ = ["DrainGate", "GatedLink"]

_Key = tuple[str, int]


class DrainGate:
    """See the module docstring. Use it on the worker's event loop only."""

    def __init__(self) -> None:
        self.draining = False
        self.handed_back = 0  # grants handed back while draining
        self.idle = asyncio.Event()
        self._link: GatedLink | None = None

    def __repr__(self) -> str:
        held = 0 if self._link is None else len(self._link.leases)
        return f"DrainGate(draining={self.draining}, leases={held})"

    def wrap(self, connect: LeaseConnector) -> LeaseConnector:
        """``connect`` with every stream it opens passing through this gate."""
        gate = self

        class _Connector:
            async def __call__(self, hello: WorkerHello, *, credits: int) -> LeaseLink:
                link = await connect(hello, credits=0 if gate.draining else credits)
                gate._link = GatedLink(link, gate)
                gate.check()
                return gate._link

        return _Connector()

    def drain(self) -> None:
        """From now on take nothing new; ``idle`` tells when the leases are over."""
        self.draining = True
        self.check()

    @property
    def leases(self) -> int:
        """Leases the current stream holds (0 without a stream)."""
        link = self._link
        return 0 if link is None or link.closed else len(link.leases)

    def check(self) -> None:
        if self.draining and self.leases == 0:
            self.idle.set()


class GatedLink:
    """A Lease stream seen through a :class:`DrainGate`: it tracks the leases
    the worker holds on it and, draining, holds back credits and grants."""

    def __init__(self, link: LeaseLink, gate: DrainGate) -> None:
        self._link = link
        self._gate = gate
        self.leases: set[_Key] = set()
        self.closed = False

    @property
    def opened(self) -> LeaseOpened:
        return self._link.opened

    async def send(self, report: WorkerReport) -> None:
        if self._gate.draining and report.credits:
            report = dataclasses.replace(report, credits=0)
        try:
            await self._link.send(report)
        except BaseException:
            self._gone()
            raise
        # Over once the server has them: a stop or failure at once, a
        # completion when the server says it is stored (settled).
        for stopped in report.stopped:
            self.leases.discard((stopped.request_id, stopped.lease_id))
        for failed in report.failed:
            self.leases.discard((failed.request_id, failed.lease_id))
        self._gate.check()

    async def receive(self) -> LeaseOrder | None:
        while True:
            try:
                order = await self._link.receive()
            except BaseException:
                self._gone()
                raise
            if order is None:
                self._gone()
                return None
            key = (order.request_id, order.lease_id)
            if isinstance(order, LeaseGrant):
                if self._gate.draining:
                    await self._hand_back(order)
                    continue
                self.leases.add(key)
            elif isinstance(order, LeaseSettled | LeaseRejected):
                self.leases.discard(key)  # stored; or fenced, so the worker drops it
            elif isinstance(order, LeaseStop) and order.kind == "cancel":
                self.leases.discard(key)  # a cancel needs no answer
            self._gate.check()
            return order

    async def _hand_back(self, grant: LeaseGrant) -> None:
        # A first run has processed none of its prompt; a resumed one did in
        # an earlier run (None: the whole prompt, as the protocol reads it).
        first = grant.next_chunk == 0 and grant.done_output_tokens == 0
        stopped = Stopped(
            grant.request_id,
            grant.lease_id,
            grant.done_output_tokens,
            input_processed=0 if first else None,
        )
        await self.send(WorkerReport(stopped=(stopped,)))
        self._gate.handed_back += 1

    def _gone(self) -> None:
        self.closed = True
        self.leases.clear()
        self._gate.check()

    async def close(self) -> None:
        self._gone()
        await self._link.close()
