"""Idempotent producers: a resent message is not stored twice.

A producer numbers its messages (``sequence``, ``sequence + 1``, ... across
its batches). The server remembers, per (tenant, producer), the highest
sequence stored and the results of the last messages; a message at or below
that sequence is a duplicate and gets its earlier result back.

Durability without a second store: every publish that carries a producer id
also appends one small journal message, in the same ``publish_batch`` (so in
the same log append as the messages it vouches for), to the lite-topic
``producers/{tenant}:{producer}`` of the empty namespace, which no tenant can
address (tenants always act in their own namespace). The journal entry holds
the highest sequence and the destinations (namespace, topic, lite-topics) of
the batch's last messages (at most :data:`JOURNALED`): their offsets are
assigned inside the very append that stores the entry, so it cannot hold
them, but it need not. The entry is the append's last record of the batch,
so in each queue the batch wrote to, the batch's messages are the last ones
logged before the entry; after a restart the server finds them there
(:class:`Journaled`, read by the hub) and answers a duplicate of the last
batch with its original offsets and timestamp (the append's, which the entry
shares). Older duplicates after a restart come back without offsets. The
journal lite-topic expires with the default TTL once the producer goes
quiet, which is how long deduplication lasts.

The table and the codec are pure; the caller does the reads and writes.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from broker.errors import InvalidArgument
from broker.types import PublishRequest, QueueName

__all__ = [
    "JOURNALED",
    "JOURNAL_TOPIC",
    "PRODUCER_RULE",
    "Destination",
    "Journaled",
    "Outcome",
    "ProducerState",
    "ProducerTable",
    "check_producer",
    "decode_journal",
    "journal_queue",
    "journal_request",
]

JOURNAL_TOPIC = "producers"
PRODUCER_RULE = "1 to 64 characters of [A-Za-z0-9_.:@=+-]"
_PRODUCER = re.compile(r"[A-Za-z0-9_.:@=+-]{1,64}")
_WINDOW = 4096  # results remembered per producer while the server runs
JOURNALED = 256  # last messages of a batch whose results survive a restart
_JOURNALED_NAME_BYTES = 16 * 1024  # and at most about this much of their names

# offsets, timestamp, size of one stored message
Outcome = tuple[tuple[int, ...], float, int]

# Where one message went: namespace, topic, lite-topics (none: the topic's own queue).
Destination = tuple[str, str, tuple[str, ...]]


def check_producer(producer_id: str) -> str:
    if _PRODUCER.fullmatch(producer_id) is None:
        raise InvalidArgument(f"producer_id {producer_id!r} breaks the rule {PRODUCER_RULE}")
    return producer_id


def journal_queue(tenant: str, producer_id: str) -> QueueName:
    return QueueName("", JOURNAL_TOPIC, f"{tenant}:{producer_id}")


def queues_of(destination: Destination) -> tuple[QueueName, ...]:
    """The queues one message was indexed into, in the order of its result's offsets."""
    namespace, topic, lites = destination
    if not lites:
        return (QueueName(namespace, topic, ""),)
    return tuple(QueueName(namespace, topic, lite) for lite in lites)


@dataclass(frozen=True, slots=True)
class Journaled:
    """The last batch's tail as a journal entry names it, and where that entry lies.

    ``destinations[i]`` is where the message of sequence ``first + i`` went;
    ``position`` and ``timestamp`` are the entry's own (the append's).
    """

    first: int
    destinations: tuple[Destination, ...]
    position: int
    timestamp: float

    def counts(self) -> dict[QueueName, int]:
        """How many of these messages each queue received."""
        counts: dict[QueueName, int] = {}
        for destination in self.destinations:
            for queue in queues_of(destination):
                counts[queue] = counts.get(queue, 0) + 1
        return counts

    def outcomes(self, ends: Mapping[QueueName, int | None]) -> dict[int, Outcome]:
        """The outcomes by sequence, given the offset of the tail's last message in
        each queue (None: not found; the messages that went there stay unknown).

        In each queue the tail's messages took consecutive offsets in sequence
        order (one append assigns them in request order and nothing else of
        that append lies between them), so walking back from each end
        gives every message its offsets.
        """
        known: dict[int, Outcome] = {}
        next_back = dict(ends)
        for i in range(len(self.destinations) - 1, -1, -1):
            offsets: list[int] = []
            found = True
            for queue in queues_of(self.destinations[i]):
                end = next_back.get(queue)
                if end is None:
                    found = False
                    continue
                offsets.append(end)
                next_back[queue] = end - 1
            if found:
                known[self.first + i] = (tuple(offsets), self.timestamp, 0)
        return known


@dataclass(slots=True)
class ProducerState:
    """Highest stored sequence and the outcomes of the last messages (by sequence).

    ``journaled``: after a load from the journal, the last batch's messages
    whose outcomes can still be looked up (the hub does it on the first
    duplicate that needs one, then clears it).
    """

    last: int = -1
    outcomes: OrderedDict[int, Outcome] | None = None
    journaled: Journaled | None = None

    def known(self, sequence: int) -> Outcome | None:
        return None if self.outcomes is None else self.outcomes.get(sequence)

    def record(self, first: int, outcomes: list[Outcome]) -> None:
        if self.outcomes is None:
            self.outcomes = OrderedDict()
        for i, outcome in enumerate(outcomes):
            self.outcomes[first + i] = outcome
        while len(self.outcomes) > _WINDOW:
            self.outcomes.popitem(last=False)
        if outcomes:
            self.last = max(self.last, first + len(outcomes) - 1)

    def remember(self, outcomes: Mapping[int, Outcome]) -> None:
        """Add outcomes looked up after a load (older than anything recorded since)."""
        if not outcomes:
            return
        merged: OrderedDict[int, Outcome] = OrderedDict(sorted(outcomes.items()))
        if self.outcomes is not None:
            merged.update(self.outcomes)
        self.outcomes = merged
        while len(merged) > _WINDOW:
            merged.popitem(last=False)


def journal_request(
    tenant: str, producer_id: str, last: int, requests: Sequence[PublishRequest]
) -> PublishRequest:
    """The journal message that goes with ``requests``, whose last sequence is ``last``.

    It names the destinations of the last :data:`JOURNALED` requests (fewer
    when their names pass about 16 KiB), runs of one destination once.
    """
    # The tail's runs, last first: destinations[i] counts[i] times.
    destinations: list[Destination] = []
    counts: list[int] = []
    name_bytes = 0
    last_topic = last_namespace = ""
    last_lites: object = None
    for topic, _, lites, _, namespace in reversed(requests[-JOURNALED:]):
        # A batch mostly repeats one destination with one lite-topic tuple
        # object (the wire decoder shares it): count those without building
        # anything (a quarter of the cost; this runs for every publish).
        if lites is last_lites and topic == last_topic and namespace == last_namespace:
            counts[-1] += 1
            continue
        destination = (namespace, topic, tuple(lites))
        if destinations and destinations[-1] == destination:
            counts[-1] += 1
        else:
            name_bytes += len(topic) + sum(len(lite) + 4 for lite in destination[2]) + 8
            if name_bytes > _JOURNALED_NAME_BYTES and destinations:
                break
            destinations.append(destination)
            counts.append(1)
        last_topic, last_lites, last_namespace = topic, lites, namespace
    taken = sum(counts)
    places: dict[Destination, int] = {}
    runs = [
        [places.setdefault(d, len(places)), n]
        for d, n in zip(reversed(destinations), reversed(counts), strict=True)
    ]
    to = [[namespace, topic, list(lites)] for namespace, topic, lites in places]
    entry = {"last": last, "first": last - taken + 1, "to": to, "runs": runs}
    body = json.dumps(entry, separators=(",", ":")).encode()
    queue = journal_queue(tenant, producer_id)
    return PublishRequest(queue.topic, body, (queue.lite,), namespace="")


def decode_journal(body: bytes, position: int, timestamp: float) -> ProducerState:
    """A state from the last journal entry, found at ``position`` and stamped
    ``timestamp`` (a damaged one means: nothing known; one without
    destinations, as older servers wrote, means: the sequence only)."""
    try:
        entry = json.loads(body)
        last = int(entry["last"])
    except (ValueError, KeyError, TypeError):
        return ProducerState()
    try:
        to: list[Destination] = [
            (str(ns), str(topic), tuple(str(lite) for lite in lites))
            for ns, topic, lites in entry["to"]
        ]
        destinations = tuple(to[place] for place, count in entry["runs"] for _ in range(count))
        first = int(entry["first"])
    except (ValueError, KeyError, TypeError, IndexError):
        return ProducerState(last=last)
    if not destinations or first + len(destinations) - 1 != last:
        return ProducerState(last=last)
    return ProducerState(last=last, journaled=Journaled(first, destinations, position, timestamp))


class ProducerTable:
    """States of recently active producers, most recent last (bounded)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._states: OrderedDict[tuple[str, str], ProducerState] = OrderedDict()

    def get(self, tenant: str, producer_id: str) -> ProducerState | None:
        key = (tenant, producer_id)
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put(self, tenant: str, producer_id: str, state: ProducerState) -> None:
        self._states[(tenant, producer_id)] = state
        self._states.move_to_end((tenant, producer_id))
        while len(self._states) > self._capacity:
            self._states.popitem(last=False)  # it comes back from its journal if needed

    def __len__(self) -> int:
        return len(self._states)
