"""The workloads every system runs, and their sizes (full and ``--quick``).

The same shape for each system, in its own idiom:

produce      ``count`` messages of ``message_bytes`` into one stream/queue,
             ``producers`` batches of ``batch`` in flight at once (Redis:
             pipelined XADD on one connection per producer; JetStream:
             publish_async with ``producers * batch`` acks pending; tidegate:
             Publish of ``batch`` messages, one channel per producer).
consume      what produce stored, through a consumer group, ``batch`` at a
             time, each batch acknowledged (Redis: XREADGROUP + XACK;
             JetStream: durable pull consumer, fetch + ack; tidegate:
             Subscribe in a group + ack frames).
publish-one  one message, wait for its acknowledgement, the next one.
topics       ``topics`` session topics with one 16-byte message each, sent
             ``topic_batch`` per request with ``producers`` in flight; the
             server's memory growth divided by the count (Redis: a stream
             per key, INFO used_memory; JetStream: a subject per session on
             one stream, nats-server RSS; tidegate: a lite-topic per
             session, tidegate-server RSS).
fan-in       one consumer over ``fanin_topics`` session topics; one message
             (64 bytes) at a time, acknowledged, at ``fanin_rate`` per second
             to random ones for ``fanin_seconds``; delivery latency =
             receive time - send time carried in the body (one machine, one
             clock). Redis: XREAD BLOCK over every key (it keeps no
             subscription set); JetStream: one ordered push consumer on the
             wildcard ``fan.>`` (2.9 allows one filter per consumer);
             tidegate: one Subscribe stream holding every lite-topic.

Every loop is bounded by its count and by ``step_seconds``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import StrEnum

from benchmarks.peers.results import System, Tier

__all__ = ["FULL", "QUICK", "Sizes", "Step", "Workload", "plan"]


@dataclass(frozen=True, slots=True)
class Sizes:
    produce_count: int
    publish_one_count: int
    publish_one_seconds: float
    topics: int
    fanin_topics: int
    fanin_rate: int
    fanin_seconds: float
    step_seconds: float
    message_bytes: int = 1024
    batch: int = 100
    producers: int = 4
    topic_batch: int = 1000
    rounds: int = 1  # fresh-server repetitions of the throughput groups (median reported)

    def __post_init__(self) -> None:
        for name in (
            "produce_count",
            "publish_one_count",
            "topics",
            "fanin_topics",
            "fanin_rate",
            "message_bytes",
            "batch",
            "producers",
            "topic_batch",
            "rounds",
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} is {value!r}; it must be an integer >= 1")
        for name in ("publish_one_seconds", "fanin_seconds", "step_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} is {getattr(self, name)!r}; it must be > 0")


FULL = Sizes(
    produce_count=200_000,
    publish_one_count=20_000,
    publish_one_seconds=15.0,
    topics=1_000_000,
    fanin_topics=100_000,
    fanin_rate=1000,
    fanin_seconds=10.0,
    step_seconds=240.0,
    rounds=3,
)

QUICK = Sizes(
    produce_count=10_000,
    publish_one_count=1_000,
    publish_one_seconds=2.0,
    topics=10_000,
    fanin_topics=2_000,
    fanin_rate=200,
    fanin_seconds=2.0,
    step_seconds=60.0,
)


class Workload(StrEnum):
    PRODUCE = "produce"
    CONSUME = "consume"
    PUBLISH_ONE = "publish-one"
    TOPICS = "topics"
    FANIN = "fanin"


# Workloads that share one server instance, in order (consume reads what
# produce stored); topics and fan-in each get a fresh instance so memory and
# latency are not measured on top of another workload's leftovers. The
# throughput groups are short and sensitive to whatever else the two cores
# run, so they are repeated ``rounds`` times (the report takes the median);
# the million topics and the fan-in run once.
_THROUGHPUT = (Workload.PRODUCE, Workload.CONSUME, Workload.PUBLISH_ONE)
_REPEATED: tuple[tuple[Tier, tuple[Workload, ...]], ...] = (
    (Tier.WINDOW, _THROUGHPUT),
    (Tier.FSYNC, _THROUGHPUT),
)
_ONCE: tuple[tuple[Tier, tuple[Workload, ...]], ...] = (
    (Tier.WINDOW, (Workload.TOPICS,)),
    (Tier.WINDOW, (Workload.FANIN,)),
)


@dataclass(frozen=True, slots=True)
class Step:
    """One server instance: a system at a tier, and the workloads run on it in order."""

    system: System
    tier: Tier
    workloads: tuple[Workload, ...]
    round: int = 1


def plan(
    systems: Sequence[System],
    workloads: Collection[Workload],
    unavailable: Collection[tuple[System, Tier]] = (),
    rounds: int = 1,
) -> list[Step]:
    """The steps of a run, interleaved by group so that every system meets the same
    background load at about the same time; a (system, tier) in ``unavailable``
    is left out."""
    groups = [(n, tier, g) for n in range(1, rounds + 1) for tier, g in _REPEATED]
    groups += [(1, tier, g) for tier, g in _ONCE]
    steps = []
    for n, tier, group in groups:
        chosen = tuple(w for w in group if w in workloads)
        if not chosen:
            continue
        steps += [
            Step(system, tier, chosen, n) for system in systems if (system, tier) not in unavailable
        ]
    return steps
