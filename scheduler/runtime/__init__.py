"""The scheduler's runtime: the policy core served over a durable store, in asyncio.

Start at :class:`Runtime`. The gRPC servicer (``scheduler.service``) turns
the Inference API's protobuf into the values of :mod:`.values` and back;
the store behind it is a :class:`RequestStore` (the broker in the server,
memory in unit tests). Errors are in :mod:`.errors`.
"""

from __future__ import annotations

from scheduler.runtime.broker_store import BrokerRequestStore
from scheduler.runtime.memory_store import MemoryRequestStore
from scheduler.runtime.runtime import Runtime
from scheduler.runtime.sessions import WorkerSession
from scheduler.runtime.store import RequestStore
from scheduler.runtime.values import (
    ChunkIn,
    CompletionIn,
    DrainingOut,
    FailedIn,
    FleetView,
    GrantOut,
    Outgoing,
    ProgressIn,
    RejectOut,
    RequestView,
    RuntimeOptions,
    RuntimeStats,
    SettledOut,
    State,
    StopOut,
    StoppedIn,
    StopReason,
    SubmitSpec,
    Submitted,
    WorkerHello,
    WorkerInput,
)

__all__ = [
    "BrokerRequestStore",
    "ChunkIn",
    "CompletionIn",
    "DrainingOut",
    "FailedIn",
    "FleetView",
    "GrantOut",
    "MemoryRequestStore",
    "Outgoing",
    "ProgressIn",
    "RejectOut",
    "RequestStore",
    "RequestView",
    "Runtime",
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
    "WorkerSession",
]
