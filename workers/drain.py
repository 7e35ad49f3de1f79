"""Draining a worker: take no new request, finish what it runs, then it may stop.

:meth:`workers.worker.Worker.stop` ends a worker at once: its runs are
cancelled and the server re-queues them (they resume elsewhere from the
stored output). Shrinking the fleet should not cost that, so a worker built
with a :class:`DrainGate` between it and its Lease streams can be drained::

    gate = DrainGate()
    worker = Worker(config, backend, gate.wrap(client.lease), clock=clock)
    ...
    gate.drain(worker)            # on the worker's loop
    await gate.idle.wait()        # every lease it held is over, settled by the server
    worker.stop()

:meth:`DrainGate.drain` calls :meth:`Worker.drain <workers.worker.Worker.drain>`,
which tells the server on the Lease stream (``draining``): from then on the
server grants this worker nothing, whatever credits it holds, and the
worker sends no credit any more. The server answers ``draining`` on the
stream once it has read it; a grant it sent before may arrive until then
(``late_grants`` counts them), and the worker runs it like any other, so
nothing is handed back and no request runs twice.

The gate tracks the leases the worker holds: ``idle`` is set once,
draining, the server has answered the drain on the current stream (or no
stream is open) and the worker holds no lease — every grant it ran has
been completed and settled (the server stored it), stopped, failed,
cancelled or fenced. Then stopping the worker loses no work.

A break does not end the leases of a worker that keeps its runs across it
(``keep_runs``, the default): its runs go on, the server holds their
leases, and the worker reconnects naming them in its hello, says
``draining`` at once on the new stream (a server that takes over a
draining stream answers so at once too), finishes them there, and is idle
then. A completion not settled at the break is named and sent again, so
it waits for its ``settled`` on the new stream. Each hello, on a stream
that opens or one that does not, tells the gate what the worker still
holds: kept runs it gave up (lease_s passed without a stream, so the
server queued their requests again) are over with its next try. A worker
that keeps no runs holds nothing once its stream is gone.
"""

from __future__ import annotations

import asyncio

from tidegate.client import (
    LeaseGrant,
    LeaseOpened,
    LeaseOrder,
    LeaseRejected,
    LeaseSettled,
    LeaseStop,
    WorkerHello,
    WorkerReport,
)
from workers.worker import LeaseConnector, LeaseLink, Worker

__all__ = ["DrainGate", "GatedLink"]

_Key = tuple[str, int]


class DrainGate:
    """See the module docstring. Use it on the worker's event loop only."""

    def __init__(self) -> None:
        self.draining = False
        self.late_grants = 0  # grants that came after the drain began (run, not refused)
        self.idle = asyncio.Event()
        self._link: GatedLink | None = None
        self._leases: set[_Key] = set()  # the worker's, across its streams

    def __repr__(self) -> str:
        return f"DrainGate(draining={self.draining}, leases={self.leases})"

    def wrap(self, connect: LeaseConnector) -> LeaseConnector:
        """``connect`` with every stream it opens passing through this gate."""
        gate = self

        class _Connector:
            async def __call__(self, hello: WorkerHello, *, credits: int) -> LeaseLink:
                # What the worker holds now: the runs it kept across a break, if any.
                gate._leases.clear()
                gate._leases.update((held.request_id, held.lease_id) for held in hello.held)
                gate.check()
                link = await connect(hello, credits=credits)
                gate._link = GatedLink(link, gate, keeps_leases=hello.keeps_leases)
                gate.check()
                return gate._link

        return _Connector()

    def drain(self, worker: Worker) -> None:
        """Drain ``worker`` (whose streams pass through this gate); ``idle`` tells
        when its leases are over."""
        self.draining = True
        worker.drain()
        self.check()

    @property
    def leases(self) -> int:
        """Leases the worker holds (with a stream open or not)."""
        return len(self._leases)

    def check(self) -> None:
        link = self._link
        answered = link is None or link.closed or link.drain_answered
        if self.draining and answered and self.leases == 0:
            self.idle.set()


class GatedLink:
    """A Lease stream seen through a :class:`DrainGate`: it tracks the leases the
    worker holds (in the gate: they may outlive the stream). ``keeps_leases``:
    the worker's runs go on after the stream (its hello's)."""

    def __init__(self, link: LeaseLink, gate: DrainGate, *, keeps_leases: bool = False) -> None:
        self._link = link
        self._gate = gate
        self.leases = gate._leases
        self.keeps_leases = keeps_leases
        self.closed = False
        self.drain_answered = False  # the server said no grant follows

    @property
    def opened(self) -> LeaseOpened:
        return self._link.opened

    async def send(self, report: WorkerReport) -> None:
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
        try:
            order = await self._link.receive()
        except BaseException:
            self._gone()
            raise
        if order is None:
            self._gone()
            return None
        if isinstance(order, LeaseGrant):
            self.leases.add((order.request_id, order.lease_id))
            if self._gate.draining:
                self._gate.late_grants += 1
        elif isinstance(order, LeaseSettled | LeaseRejected):
            # Stored; or fenced, so the worker drops it.
            self.leases.discard((order.request_id, order.lease_id))
        elif isinstance(order, LeaseStop):
            if order.kind == "cancel":  # a cancel needs no answer
                self.leases.discard((order.request_id, order.lease_id))
        else:  # the server's answer to the drain: no grant follows
            self.drain_answered = True
        self._gate.check()
        return order

    def _gone(self) -> None:
        self.closed = True
        if not self.keeps_leases:
            self.leases.clear()  # the runs are abandoned, the server released the leases
        self._gate.check()

    async def close(self) -> None:
        self._gone()
        await self._link.close()
