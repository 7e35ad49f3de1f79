"""Producer ids and sequence numbers that make publish retries safe.

The server stores a producer's message only if its sequence is above the
highest that producer has stored. That makes a resent batch harmless, but it
also means two calls of one producer must never overtake each other: if
sequences 11-20 land before 1-10, the server takes 1-10 for duplicates and
drops them. So a client keeps *lanes*: producer ids ``base``, ``base.1``,
``base.2`` ... each with its own sequence and at most one call in flight.
A call takes a free lane (a new one when all are busy), keeps it through
its retries, and hands it back with the sequence moved past what it sent,
whether it succeeded or not (gaps are fine, reuse is not).

A producer named by the user keeps its id across process restarts, so its
sequence must keep rising across them too: by default it starts at the wall
clock in microseconds, which stays ahead of any earlier run that published
fewer than a million messages a second.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tidegate.errors import InvalidArgument

__all__ = ["Lane", "Lanes"]

_PRODUCER = re.compile(r"[A-Za-z0-9_.:@=+-]{1,64}")
_SUFFIX_ROOM = 8  # ".NNNNNNN" for lane numbers


@dataclass(slots=True)
class Lane:
    producer_id: str
    next_sequence: int


class Lanes:
    """Thread-safe pool of producer lanes (also used from one event loop)."""

    def __init__(self, base: str, first_sequence: int) -> None:
        if _PRODUCER.fullmatch(base) is None or len(base) > 64 - _SUFFIX_ROOM:
            raise InvalidArgument(
                f"producer_id {base!r} breaks the rule: 1 to {64 - _SUFFIX_ROOM} characters "
                "of [A-Za-z0-9_.:@=+-]"
            )
        if first_sequence < 1:
            raise InvalidArgument(f"first_sequence is {first_sequence}; it must be >= 1")
        self.base = base
        self._first = first_sequence
        self._free: list[Lane] = []
        self._made = 0
        self._lock = threading.Lock()

    @classmethod
    def for_client(
        cls,
        producer_id: str | None,
        first_sequence: int | None,
        *,
        new_id: Callable[[], str],
        wall_us: Callable[[], int],
    ) -> Lanes:
        """A client's lanes: a fresh id starting at 1, or a named one starting at the clock."""
        if producer_id is None:
            return cls(new_id(), first_sequence or 1)
        return cls(producer_id, first_sequence if first_sequence is not None else wall_us())

    def take(self) -> Lane:
        with self._lock:
            if self._free:
                return self._free.pop()
            number = self._made
            self._made += 1
        suffix = f".{number}" if number else ""
        return Lane(self.base + suffix, self._first)

    def give(self, lane: Lane, sent: int) -> None:
        """Hand a lane back after a call that used ``sent`` sequence numbers."""
        lane.next_sequence += sent
        with self._lock:
            self._free.append(lane)

    @property
    def lanes(self) -> int:
        return self._made
