"""The inference API's values, as the SDK hands them over (protobuf stays in the wire module).

Two sides share this module:

* clients: :class:`SubmitOptions` in, :class:`Submitted` and
  :class:`RequestStatus` back, and the reply stream as :class:`ReplyChunk`
  values ending with one :class:`ReplyEnd`;
* workers: the Lease stream's orders (:class:`LeaseGrant`,
  :class:`LeaseStop`, :class:`LeaseRejected`, :class:`LeaseSettled`) and
  what a worker reports (:class:`WorkerReport` with its parts).

All frozen; times are seconds. A refusal by admission is the error
:class:`Refused` (a ``ResourceExhausted`` with the reason and the
retry-after the server put in the trailing metadata).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeAlias

from tidegate.errors import InvalidArgument, ResourceExhausted
from tidegate.values import LITE_RULE, is_lite

__all__ = [
    "Completion",
    "Failed",
    "FirstToken",
    "FleetStatus",
    "HeldLease",
    "LeaseDraining",
    "LeaseFeedback",
    "LeaseGrant",
    "LeaseOpened",
    "LeaseOrder",
    "LeaseRejected",
    "LeaseSettled",
    "LeaseStop",
    "Load",
    "OutputChunk",
    "Refused",
    "ReplyChunk",
    "ReplyEnd",
    "ReplyEvent",
    "RequestState",
    "RequestStatus",
    "StopKind",
    "Stopped",
    "SubmitOptions",
    "Submitted",
    "WorkerHello",
    "WorkerReport",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})
# The server's rule for SubmitRequest.idempotency_key (inference.proto): a
# lite-topic name's.
IDEMPOTENCY_KEY_RULE = LITE_RULE


class Refused(ResourceExhausted):
    """Admission refused the request for now.

    ``reason``: ``rate_requests``, ``rate_tokens``, ``tenant_queue_full``,
    ``global_queue_full``, ``shed`` (the server's names); ``retry_after_s``:
    retrying earlier will most likely be refused again.
    """

    def __init__(self, message: str, *, reason: str, retry_after_s: float) -> None:
        super().__init__(message, code="RESOURCE_EXHAUSTED")
        self.reason = reason
        self.retry_after_s = retry_after_s


# ------------------------------------------------------------------ clients


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """What goes with a payload. ``session``: replies go to ``reply_topic/session``
    (empty: a lite-topic of the request's own). Token counts are estimates for
    admission and fair sharing (0 input tokens: estimated from the payload).
    ``deadline_s``: drop it if still queued after this long (0: never).

    ``idempotency_key``: sending the same key again (same tenant) answers with
    the first request's :class:`Submitted` instead of queueing it twice, for
    as long as the server remembers the key (while the request is queued or
    running, and 10 minutes after its admission by default). Empty: the
    client makes one per :meth:`~tidegate.inference.InferenceClient.submit`
    call, which its own retries reuse; give your own to resend safely
    yourself (after a timeout, from another process). 1 to 128 characters of
    ``[A-Za-z0-9_.:@=+-]``."""

    priority: int = 0
    session: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    deadline_s: float = 0.0
    reply_topic: str = ""
    properties: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    idempotency_key: str = ""

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens"):
            value = getattr(self, name)
            if not 0 <= value < 2**32:
                raise InvalidArgument(f"{name} is {value}; it must be in [0, 2**32)")
        if not (math.isfinite(self.deadline_s) and self.deadline_s >= 0):
            raise InvalidArgument(f"deadline_s is {self.deadline_s}; it must be >= 0 (0: none)")
        for key in self.properties:
            if key.startswith("tidegate."):
                raise InvalidArgument(f"property {key!r}: keys starting 'tidegate.' are reserved")
        key = self.idempotency_key
        if key and not is_lite(key):
            shown = key if len(key) <= 64 else key[:64] + "..."
            raise InvalidArgument(
                f"idempotency_key {shown!r} ({len(key)} characters) breaks the rule "
                f"{IDEMPOTENCY_KEY_RULE}"
            )


@dataclass(frozen=True, slots=True)
class Submitted:
    """An admitted request: read its reply at ``reply_topic/reply_lite_topic`` from
    ``reply_offset``. ``admitted_at``: the server's wall clock (epoch seconds).
    ``duplicate``: the idempotency key named a request the server had already
    admitted; this is that request (nothing new was queued)."""

    request_id: str
    reply_topic: str
    reply_lite_topic: str
    reply_offset: int
    priority: int
    admitted_at: float
    duplicate: bool = False


class RequestState(enum.Enum):
    QUEUED = "queued"  # waiting (also after a preemption or a lost worker)
    RUNNING = "running"  # leased to a worker
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DROPPED = "dropped"  # its deadline passed while it was queued
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self not in (RequestState.QUEUED, RequestState.RUNNING)


@dataclass(frozen=True, slots=True)
class RequestStatus:
    """Where a request is. ``attempts``: times it was leased to a worker (so
    ``attempts >= 1`` means it was dispatched at least once)."""

    request_id: str
    state: RequestState
    priority: int
    reply_topic: str
    reply_lite_topic: str
    reply_offset: int
    chunks: int
    attempts: int
    worker_id: str
    input_tokens: int
    output_tokens: int
    reason: str
    admitted_at: float


@dataclass(frozen=True, slots=True)
class ReplyChunk:
    """One piece of a request's output, in order: ``index`` 0, 1, 2, ..."""

    request_id: str
    index: int
    data: bytes = field(repr=False)
    offset: int = 0  # its offset in the reply lite-topic


@dataclass(frozen=True, slots=True)
class ReplyEnd:
    """The last event of a request's reply. ``outcome``: completed, cancelled,
    dropped or failed; usage and ``finish_reason`` for completed, ``reason``
    for dropped and failed. ``chunks``: how many chunks came before it."""

    request_id: str
    outcome: str
    chunks: int
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = ""
    reason: str = ""


ReplyEvent: TypeAlias = ReplyChunk | ReplyEnd


# ------------------------------------------------------------------ workers


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease a reconnecting worker still runs, or still has to report."""

    request_id: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class WorkerHello:
    """How a worker introduces itself. ``capacity``: requests it can run at once
    (informational; the credits say what it takes). ``lease_s``: the heartbeat
    interval it promises (0: the server's default). ``keeps_leases``: it goes
    on running its requests when the stream breaks and reconnects within
    lease_s, so the server holds the stream's leases that long; ``held``: on
    such a reconnect, the leases of the broken stream it still holds (the
    server attaches them to this stream and answers a cancel stop for each
    one it no longer holds, or ``settled`` for one whose completion it
    already stored)."""

    worker_id: str
    capacity: int = 1
    backend: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    lease_s: float = 0.0
    held: tuple[HeldLease, ...] = ()
    keeps_leases: bool = False


@dataclass(frozen=True, slots=True)
class LeaseOpened:
    worker_id: str
    lease_s: float  # send something at least this often
    server_epoch: int
    max_chunk_bytes: int


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """One request to run under ``lease_id`` (every report about it names it).

    Resume: ``next_chunk`` is the index of the first chunk to send,
    ``done_output_tokens`` what earlier runs made (as far as the server
    knows) and ``resume_output`` the output already stored, which the run
    continues from. ``payload`` and ``resume_output`` are whole here (pieces
    joined)."""

    request_id: str
    lease_id: int
    tenant: str
    priority: int
    payload: bytes = field(repr=False)
    input_tokens: int
    output_tokens: int
    properties: Mapping[str, str]
    next_chunk: int
    done_output_tokens: int
    resume_output: bytes = field(repr=False)
    deadline_s: float  # seconds left (0: none)
    attempt: int
    reply_topic: str
    reply_lite_topic: str


StopKind: TypeAlias = Literal["preempt", "cancel"]


@dataclass(frozen=True, slots=True)
class LeaseStop:
    """Stop a request: ``preempt`` (answer with :class:`Stopped`; it resumes
    elsewhere) or ``cancel`` (no answer needed)."""

    request_id: str
    lease_id: int
    kind: StopKind


@dataclass(frozen=True, slots=True)
class LeaseRejected:
    """A report the server refused: ``code`` is the gRPC status name
    (FAILED_PRECONDITION for a fenced lease)."""

    request_id: str
    lease_id: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class LeaseSettled:
    """A completion the server has stored: the request is over."""

    request_id: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class LeaseDraining:
    """The server's answer to ``WorkerReport.draining``: no grant follows on this stream."""


LeaseOrder: TypeAlias = LeaseGrant | LeaseStop | LeaseRejected | LeaseSettled | LeaseDraining


@dataclass(frozen=True, slots=True)
class LeaseFeedback:
    """Saturation signals for the server's window controller; None: unknown."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    queue_depth: int | None = None
    kv_usage: float | None = None
    gpu_util: float | None = None
    gpu_mem: float | None = None


@dataclass(frozen=True, slots=True)
class OutputChunk:
    request_id: str
    lease_id: int
    index: int
    data: bytes = field(repr=False)
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class FirstToken:
    """The first output token of this run is out."""

    request_id: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class Completion:
    """Real usage of the whole request, including output of earlier runs."""

    request_id: str
    lease_id: int
    input_tokens: int
    output_tokens: int
    finish_reason: str


@dataclass(frozen=True, slots=True)
class Stopped:
    """A preempted (or handed back) request; tokens are cumulative over all runs."""

    request_id: str
    lease_id: int
    done_output_tokens: int
    input_processed: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    request_id: str
    lease_id: int
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """One message on the Lease stream; the server applies its parts in this order.
    An empty report is a heartbeat."""

    credits: int = 0
    feedback: LeaseFeedback | None = None
    chunks: tuple[OutputChunk, ...] = ()
    first_tokens: tuple[FirstToken, ...] = ()
    stopped: tuple[Stopped, ...] = ()
    failed: tuple[Failed, ...] = ()
    completions: tuple[Completion, ...] = ()
    # From now on the server grants this stream nothing more; what it runs
    # goes on (a worker leaving the fleet). Lasts as long as the stream.
    draining: bool = False
    # The worker stops everything it runs and closes the stream: its leases go
    # back to the queue when it ends, without the grace of keeps_leases.
    leaving: bool = False

    def __post_init__(self) -> None:
        if self.credits < 0:
            raise InvalidArgument(f"credits is {self.credits}; it must be >= 0")


@dataclass(frozen=True, slots=True)
class Load:
    """Requests waiting and running in one priority band, or of one tenant."""

    queued: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class FleetStatus:
    """How much work the server holds (``InferenceClient.fleet_status``, a worker
    tenant's key): requests queued and in flight in all, per priority band
    (highest first) and per tenant (by name), with only the bands and tenants
    that hold any; and the Lease streams open, of which ``draining_workers``
    are draining."""

    queued: int
    in_flight: int
    bands: Mapping[int, Load] = field(default_factory=dict)
    tenants: Mapping[str, Load] = field(default_factory=dict)
    workers: int = 0
    draining_workers: int = 0
