"""What the runtime holds for each request it serves, and for each lease.

A :class:`Live` request is queued or running in the policy. While it runs it
has exactly one current :class:`Lease`; every report from a worker names a
lease id, and only the current lease's reports count (fencing). A lease ends
(``GONE``) when the request completes, is preempted, cancelled or failed, or
its worker goes quiet; the request then has no lease until the next grant.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from scheduler.runtime.records import SubmitRecord
from scheduler.runtime.values import RequestView, State
from scheduler.types import Request

if TYPE_CHECKING:
    from scheduler.runtime.sessions import WorkerSession

__all__ = ["ACTIVE", "COMPLETING", "GONE", "STOPPING", "Lease", "Live"]

ACTIVE = "active"  # granted; chunks and reports are accepted
STOPPING = "stopping"  # a preempt order is out; still accepted until the worker says stopped
COMPLETING = "completing"  # its completion is being stored; nothing more is accepted
GONE = "gone"  # fenced off


class Lease:
    """One run of one request on one worker session."""

    __slots__ = (
        "done_output_tokens",
        "lease_id",
        "live",
        "previous_worker",
        "sent",
        "session",
        "state",
        "stop_at",
    )

    def __init__(
        self, lease_id: int, live: Live, session: WorkerSession, done_output_tokens: int
    ) -> None:
        self.lease_id = lease_id
        self.live = live
        self.session = session
        self.state = ACTIVE
        self.stop_at: float | None = None  # when a preempt order went out
        self.done_output_tokens = done_output_tokens
        self.sent = False  # the grant went to the worker (until then it knows nothing of it)
        self.previous_worker = live.last_worker  # Status's worker again if it is taken back

    @property
    def current(self) -> bool:
        return self.state != GONE and self.live.lease is self

    def __repr__(self) -> str:
        return f"Lease({self.lease_id:#x}, {self.live.record.request_id!r}, {self.state})"


class Live:
    """A request the runtime serves: queued or running in the policy."""

    __slots__ = (
        "attempts",
        "chunks_known",
        "failures",
        "finishing",
        "first_reply_offset",
        "last_worker",
        "lease",
        "next_chunk",
        "offset",
        "payload",
        "payload_size",
        "pending",
        "record",
        "request",
        "stored",
    )

    def __init__(
        self,
        record: SubmitRecord,
        request: Request,
        stored: asyncio.Future[None],
        *,
        payload: bytes | None,
        payload_size: int,
        offset: int | None = None,
        chunks_known: bool = True,
    ) -> None:
        self.record = record
        self.request = request
        self.stored = stored  # resolves once the submit record is durable
        self.offset = offset  # of the submit record in the requests queue
        self.payload = payload  # kept while queued when small (else read back)
        self.payload_size = payload_size
        self.lease: Lease | None = None
        self.last_worker = ""  # the worker of its latest grant (Status keeps it once finished)
        self.next_chunk = 0  # chunks accepted (stored or on their way, in order)
        self.chunks_known = chunks_known  # False after a restart until the reply is scanned
        self.first_reply_offset: int | None = None
        self.pending: asyncio.Future[Any] | None = None  # the last write naming this request
        self.attempts = 0
        self.failures = 0
        self.finishing: asyncio.Future[RequestView] | None = None

    @property
    def request_id(self) -> str:
        return self.record.request_id

    @property
    def state(self) -> str:
        return State.RUNNING if self.lease is not None else State.QUEUED

    def view(self, *, reply_offset: int | None = None) -> RequestView:
        record = self.record
        lease = self.lease
        return RequestView(
            request_id=record.request_id,
            tenant=record.tenant,
            state=self.state,
            priority=record.priority,
            reply_topic=record.reply_topic,
            reply_lite_topic=record.reply_lite,
            reply_offset=record.reply_from if reply_offset is None else reply_offset,
            chunks=self.next_chunk,
            attempts=self.attempts,
            worker_id=lease.session.hello.worker_id if lease is not None else "",
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            reason="",
            admitted_at=record.admitted_at,
        )
