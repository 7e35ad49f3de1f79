"""Which request each idempotency key names (pure bookkeeping, wall-clock times handed in).

A Submit that carries a key the table knows for its tenant admits nothing:
it gets the original request's answer again. The rule, in one place:

* a key is known while its request is queued or running (bounded by the
  queue caps), whatever its age;
* after the request finished, it is known until ``ttl_s`` after the
  request's admission (on the wall clock: admission times are in the submit
  records, so a restart applies the same rule), and for at most
  ``max_keys`` finished requests — past that the oldest-finished go first;
* a request refused by admission, or whose submit was never stored, leaves
  no key behind: sending it again admits it afresh.

Each remembered key of a finished request holds the restart point at its
submit record (the caller closes the offsets :meth:`IdempotencyKeys.prune`
hands back), so a restart replays the record and its done record and
rebuilds the entry; the price is a replay that reaches back at most
``ttl_s`` (or ``max_keys`` requests).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from scheduler.runtime.records import SubmitRecord
from scheduler.runtime.values import Submitted

__all__ = ["IdempotencyKeys", "Remembered", "submitted_of"]

KeyName = tuple[str, str]  # tenant, key


def submitted_of(record: SubmitRecord, *, duplicate: bool = False) -> Submitted:
    """Submit's answer for a stored request (``record.reply_from`` as stored)."""
    return Submitted(
        record.request_id,
        record.reply_topic,
        record.reply_lite,
        record.reply_from,
        record.priority,
        record.admitted_at,
        duplicate,
    )


@dataclass(frozen=True, slots=True)
class Remembered:
    """A finished request's answer, kept for its key until ``expires_at`` (wall clock)."""

    answer: Submitted
    offset: int | None  # its submit record, held in the restart point while remembered
    expires_at: float


class IdempotencyKeys:
    """``(tenant, key)`` -> a live request's id, or a finished one's :class:`Remembered`."""

    __slots__ = ("_done", "_live", "max_keys", "ttl_s")

    def __init__(self, ttl_s: float, max_keys: int) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._live: dict[KeyName, str] = {}
        self._done: OrderedDict[KeyName, Remembered] = OrderedDict()  # in the order they finished

    def __len__(self) -> int:
        return len(self._live) + len(self._done)

    def find(self, tenant: str, key: str, now: float) -> str | Remembered | None:
        """The live request id, the remembered answer, or None (unknown or expired)."""
        name = (tenant, key)
        live = self._live.get(name)
        if live is not None:
            return live
        found = self._done.get(name)
        if found is None or found.expires_at <= now:
            return None  # an expired one waits for prune() to close its offset
        return found

    def admit(self, tenant: str, key: str, request_id: str) -> None:
        """``request_id`` (queued now) answers to this key."""
        self._live[(tenant, key)] = request_id

    def finished(self, record: SubmitRecord, offset: int | None, now: float) -> list[int]:
        """``record``'s request is over (``offset``: its submit record, None if never
        stored). Returns the offsets the restart point may now close: those of
        keys forgotten here (this one if it is not kept, older ones past
        ``max_keys``)."""
        name = (record.tenant, record.idempotency_key)
        if self._live.get(name) == record.request_id:
            del self._live[name]
        if offset is None:
            return []  # never stored: nothing to answer with, a resend admits afresh
        return self.remember(record, offset, now)

    def remember(self, record: SubmitRecord, offset: int, now: float) -> list[int]:
        """Keep a finished request's answer (a restart calls this for what it replays)."""
        expires_at = record.admitted_at + self.ttl_s
        if expires_at <= now or self.max_keys == 0:
            return [offset]
        name = (record.tenant, record.idempotency_key)
        freed: list[int] = []
        old = self._done.pop(name, None)
        if old is not None and old.offset is not None:
            freed.append(old.offset)
        self._done[name] = Remembered(submitted_of(record, duplicate=True), offset, expires_at)
        while len(self._done) > self.max_keys:
            freed.extend(self._evict())
        return freed

    def prune(self, now: float) -> list[int]:
        """Forget expired keys from the oldest-finished on; their offsets to close.

        Expiry times are not quite in finish order (a long run finishes late),
        so one may wait behind a younger one; :meth:`find` never answers with it.
        """
        freed: list[int] = []
        done = self._done
        while done and next(iter(done.values())).expires_at <= now:
            freed.extend(self._evict())
        return freed

    def _evict(self) -> list[int]:
        _, gone = self._done.popitem(last=False)
        return [] if gone.offset is None else [gone.offset]
