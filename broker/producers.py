"""Idempotent producers: a resent message is not stored twice.

A producer numbers its messages (``sequence``, ``sequence + 1``, ... across
its batches). The server remembers, per (tenant, producer), the highest
sequence stored and the results of the last messages; a message at or below
that sequence is a duplicate and gets its earlier result back.

Durability without a second store: every publish that carries a producer id
also appends one small journal message, in the same ``publish_batch`` (so in
the same log append as the messages it vouches for), to the lite-topic
``producers/{tenant}:{producer}`` of the empty namespace, which no tenant can
address (tenants always act in their own namespace). After a restart the
first publish of a producer reads the last journal entry back: the highest
sequence survives, the results (offsets) of the last messages do not, so a
duplicate first seen after a restart is answered without its offsets. The journal
lite-topic expires with the default TTL once the producer goes quiet, which
is how long deduplication lasts.

The table itself is pure; the caller does the reads and writes.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass

from broker.errors import InvalidArgument
from broker.types import PublishRequest, QueueName

__all__ = [
    "JOURNAL_TOPIC",
    "PRODUCER_RULE",
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
_WINDOW = 4096  # results remembered per producer

# offsets, timestamp, size of one stored message
Outcome = tuple[tuple[int, ...], float, int]


def check_producer(producer_id: str) -> str:
    if _PRODUCER.fullmatch(producer_id) is None:
        raise InvalidArgument(f"producer_id {producer_id!r} breaks the rule {PRODUCER_RULE}")
    return producer_id


def journal_queue(tenant: str, producer_id: str) -> QueueName:
    return QueueName("", JOURNAL_TOPIC, f"{tenant}:{producer_id}")


@dataclass(slots=True)
class ProducerState:
    """Highest stored sequence and the outcomes of the last messages (by sequence)."""

    last: int = -1
    outcomes: OrderedDict[int, Outcome] | None = None

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


def journal_request(tenant: str, producer_id: str, last: int) -> PublishRequest:
    """The journal message that goes with a batch whose last fresh sequence is ``last``.

    It holds the sequence only: offsets are assigned inside the very append
    that stores it, so the outcomes of a batch stay in memory (see the
    module docstring) and a duplicate seen after a restart comes back
    without its offsets.
    """
    body = json.dumps({"last": last}, separators=(",", ":")).encode()
    queue = journal_queue(tenant, producer_id)
    return PublishRequest(queue.topic, body, (queue.lite,), namespace="")


def decode_journal(body: bytes) -> ProducerState:
    """A state from the last journal entry (a damaged one means: nothing known)."""
    try:
        last = int(json.loads(body)["last"])
    except (ValueError, KeyError, TypeError):
        return ProducerState()
    return ProducerState(last=last)


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
