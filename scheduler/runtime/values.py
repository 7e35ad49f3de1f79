"""Frozen values the runtime takes from and gives to its servicer (and its tests).

Pure: no protobuf, no I/O. The gRPC servicer turns protobuf into these and
back; a test drives the runtime with them directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from scheduler.runtime.errors import ServingError
from scheduler.types import PolicyStats, WorkerFeedback

__all__ = [
    "ChunkIn",
    "CompletionIn",
    "DrainingOut",
    "FailedIn",
    "FleetView",
    "GrantOut",
    "HeldLease",
    "Outgoing",
    "ProgressIn",
    "RejectOut",
    "RequestView",
    "RuntimeOptions",
    "RuntimeStats",
    "SettledOut",
    "State",
    "StopOut",
    "StopReason",
    "StoppedIn",
    "SubmitSpec",
    "Submitted",
    "WorkerHello",
    "WorkerInput",
]

MiB = 1024 * 1024
_NO_STRINGS: Mapping[str, str] = MappingProxyType({})


def _no_strings() -> Mapping[str, str]:
    return _NO_STRINGS


class State:
    """Where a request is (``RequestView.state``); the last four are final."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DROPPED = "dropped"
    FAILED = "failed"

    FINAL: frozenset[str] = frozenset({COMPLETED, CANCELLED, DROPPED, FAILED})


class StopReason:
    PREEMPT = "preempt"
    CANCEL = "cancel"


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Knobs of the runtime; defaults suit a server on one machine."""

    lease_s: float = 10.0  # a worker stream quiet this long loses its leases
    min_lease_s: float = 0.5
    max_lease_s: float = 300.0
    tick_s: float = 0.05  # deadlines, lease times and preemptions are checked this often
    commit_interval_s: float = 1.0  # the restart point moves at most this often
    max_chunk_bytes: int = 4 * MiB
    inline_bytes: int = 4 * MiB  # payload / resume output larger than this go in pieces
    piece_bytes: int = 1 * MiB
    cache_payload_bytes: int = 64 * 1024  # payloads up to this stay in memory while queued
    cache_total_bytes: int = 256 * MiB
    max_attempts: int = 5  # retryable failures before a request fails for good
    default_output_tokens: int = 256  # the estimate when a submit gives none
    default_reply_topic: str = "chatbot"
    finished_capacity: int = 100_000  # finished requests remembered for Status/Cancel
    # The journal that carries them over restarts (scheduler.runtime.finished) is
    # folded into one snapshot at most this often (and when it holds
    # finished_capacity entries): the log it holds back is about this long.
    finished_compact_s: float = 300.0
    max_properties_bytes: int = 64 * 1024
    max_credits: int = 1_000_000
    # A submit's idempotency key is remembered while its request is queued or
    # running, and until this long after its admission (wall clock, so across
    # restarts too); 0: only while it is queued or running.
    idempotency_ttl_s: float = 600.0
    # Keys of finished requests remembered at most (the oldest go first); each
    # holds the restart point at its submit record, so a restart can rebuild it.
    idempotency_max_keys: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "lease_s",
            "min_lease_s",
            "max_lease_s",
            "tick_s",
            "commit_interval_s",
            "finished_compact_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ValueError(f"{name} is {value!r}; it must be a finite number > 0")
        if not self.min_lease_s <= self.lease_s <= self.max_lease_s:
            raise ValueError(
                f"lease_s {self.lease_s} must lie in [min_lease_s {self.min_lease_s}, "
                f"max_lease_s {self.max_lease_s}]"
            )
        for name in (
            "max_chunk_bytes",
            "inline_bytes",
            "piece_bytes",
            "max_attempts",
            "finished_capacity",
            "max_properties_bytes",
            "max_credits",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} is {value!r}; it must be an integer >= 1")
        ttl = self.idempotency_ttl_s
        if not (isinstance(ttl, int | float) and 0 <= ttl < float("inf")):
            raise ValueError(f"idempotency_ttl_s is {ttl!r}; it must be a finite number >= 0")
        for name in (
            "cache_payload_bytes",
            "cache_total_bytes",
            "default_output_tokens",
            "idempotency_max_keys",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ValueError(f"{name} is {value!r}; it must be an integer >= 0")


# ------------------------------------------------------------------ clients


@dataclass(frozen=True, slots=True)
class SubmitSpec:
    """What a client asks for (the payload travels beside it)."""

    priority: int = 0
    session: str = ""
    input_tokens: int = 0  # 0: estimated from the payload
    output_tokens: int = 0  # 0: the server's default estimate
    deadline_s: float = 0.0  # seconds from now; 0: none
    reply_topic: str = ""  # "": the default (chatbot)
    properties: Mapping[str, str] = field(default_factory=_no_strings)
    idempotency_key: str = ""  # "": none (a resend may run twice)


@dataclass(frozen=True, slots=True)
class Submitted:
    request_id: str
    reply_topic: str
    reply_lite_topic: str
    reply_offset: int
    priority: int
    admitted_at: float  # wall clock, seconds since the epoch
    duplicate: bool = False  # the answer to an earlier submit with the same key


@dataclass(frozen=True, slots=True)
class RequestView:
    """A request's state for Status and Cancel."""

    request_id: str
    tenant: str
    state: str  # one of State
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


# ------------------------------------------------------------------ workers


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease a reconnecting worker says it still runs (``WorkerHello.held``)."""

    request_id: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class WorkerHello:
    worker_id: str
    capacity: int = 0
    backend: str = ""
    labels: Mapping[str, str] = field(default_factory=_no_strings)
    lease_s: float = 0.0  # 0: the server's default
    held: tuple[HeldLease, ...] = ()  # leases of a broken stream it still runs
    keeps_leases: bool = False  # it runs on across a break: hold its leases lease_s


@dataclass(frozen=True, slots=True)
class ChunkIn:
    request_id: str
    lease_id: int
    index: int
    data: bytes
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class ProgressIn:
    request_id: str
    lease_id: int
    first_token: bool = True


@dataclass(frozen=True, slots=True)
class CompletionIn:
    request_id: str
    lease_id: int
    input_tokens: int
    output_tokens: int
    finish_reason: str = ""


@dataclass(frozen=True, slots=True)
class StoppedIn:
    request_id: str
    lease_id: int
    done_output_tokens: int
    input_processed: int | None = None


@dataclass(frozen=True, slots=True)
class FailedIn:
    request_id: str
    lease_id: int
    message: str
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class WorkerInput:
    """One message of a Lease stream (after the hello), applied in field order."""

    credits: int = 0
    feedback: WorkerFeedback | None = None
    chunks: tuple[ChunkIn, ...] = ()
    progress: tuple[ProgressIn, ...] = ()
    stopped: tuple[StoppedIn, ...] = ()
    failed: tuple[FailedIn, ...] = ()
    completions: tuple[CompletionIn, ...] = ()
    draining: bool = False  # grant this stream nothing more (its runs go on)
    leaving: bool = False  # it stops everything and closes: no reconnect grace


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the server holds now, for a fleet's autoscaler (``Runtime.fleet_status``).

    ``bands``: priority -> (queued, in flight), bands with anything in them;
    ``tenants``: name -> (queued, in flight), tenants with anything in them."""

    queued: int
    in_flight: int
    bands: Mapping[int, tuple[int, int]]
    tenants: Mapping[str, tuple[int, int]]
    workers: int
    draining_workers: int


@dataclass(frozen=True, slots=True)
class GrantOut:
    """One request for a worker to run under ``lease_id``.

    ``payload`` is None when the payload is larger than the inline limit:
    ``payload_pieces`` then yields it. ``resume_output`` is the output already
    stored (concatenated chunk data), which the run continues from.
    """

    request_id: str
    lease_id: int
    tenant: str
    priority: int
    payload: bytes | None
    payload_size: int
    payload_pieces: AsyncIterator[bytes] | None
    input_tokens: int
    output_tokens: int
    properties: Mapping[str, str]
    next_chunk: int
    done_output_tokens: int
    resume_output: bytes
    deadline_s: float  # seconds left; 0 none
    attempt: int
    reply_topic: str
    reply_lite_topic: str


@dataclass(frozen=True, slots=True)
class StopOut:
    request_id: str
    lease_id: int
    reason: str  # one of StopReason


@dataclass(frozen=True, slots=True)
class RejectOut:
    """An item of a worker message refused; ``error`` says why (mapped to a code)."""

    request_id: str
    lease_id: int
    error: ServingError


@dataclass(frozen=True, slots=True)
class SettledOut:
    request_id: str
    lease_id: int


@dataclass(frozen=True, slots=True)
class DrainingOut:
    """The answer to a drain: no grant follows on this stream."""


Outgoing = GrantOut | StopOut | RejectOut | SettledOut | DrainingOut


# -------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A snapshot for metrics: the policy's own plus the runtime's counters."""

    policy: PolicyStats
    workers: int
    live_requests: int
    pending_writes: int
    counters: Mapping[str, int] = field(default_factory=dict)
