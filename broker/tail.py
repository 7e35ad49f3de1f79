"""The newest messages of subscribed queues, kept in memory for their readers.

A subscriber that keeps up asks for what was just published: a chat's next
token, a task's reply. Reading that back costs an index lookup, a ``pread``
of the log and a decode per message, the largest share of the server's work
per streamed chunk. So the broker keeps, for each queue that has a
subscriber, its last few messages as they were appended (the body object is
the one the publisher sent: no copy), and a read that falls inside them is
answered from here.

What is kept, and when it is not used:

* only queues with a live subscriber (the registry's in-memory count), only
  inline bodies; a chunked body is not kept and ends the queue's run, so
  the tail always holds consecutive offsets;
* at most ``per_queue`` messages a queue and ``max_bytes`` in all (bodies,
  properties and a per-message overhead): past that, the queue that was
  appended to longest ago loses its tail; a message whose body or
  properties exceed ``max_body_bytes`` is not kept;
* a tail belongs to one incarnation of its queue (its qid): a queue removed
  and made again never reads the old one's messages;
* a read that starts before the tail, or a tail whose oldest record
  retention has deleted, goes to the log as before.

Callers hold the broker's lock (the tails are appended under it, right after
the index batch that makes the messages readable is written).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from itertools import islice

from broker.types import Message, QueueName

__all__ = ["Tails"]

# (offset, log position, timestamp, properties, body, bytes it holds)
_Kept = tuple[int, int, float, Mapping[str, str], bytes, int]

# What a kept message holds beside its body and properties: its tuple, the
# share of a deque block, the offset and position ints (CPython 3.11, 64-bit).
MESSAGE_OVERHEAD = 160


class _Tail:
    __slots__ = ("bytes", "messages", "qid")

    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.messages: deque[_Kept] = deque()
        self.bytes = 0


class Tails:
    """The tails of subscribed queues: :meth:`add` on append, :meth:`read` on read."""

    def __init__(
        self, per_queue: int = 64, max_bytes: int = 64 * 1024 * 1024, max_body_bytes: int = 65536
    ) -> None:
        self.per_queue = per_queue
        self.max_bytes = max_bytes
        self.max_body_bytes = max_body_bytes
        self._tails: OrderedDict[bytes, _Tail] = OrderedDict()
        self._bytes = 0
        self.hits = 0  # reads answered from memory (tests, stats)

    def __len__(self) -> int:
        return len(self._tails)

    @property
    def held_bytes(self) -> int:
        """Body bytes held in all."""
        return self._bytes

    def add(
        self,
        key: bytes,
        qid: int,
        first: int,
        *,
        positions: Sequence[int],
        timestamp: float,
        properties: Mapping[str, str],
        properties_bytes: int,
        bodies: Sequence[bytes],
    ) -> None:
        """Messages ``first, first+1, ...`` of queue ``key`` were appended
        (``properties_bytes``: the size of their properties, encoded)."""
        tail = self._tails.get(key)
        if tail is None or tail.qid != qid:
            if tail is not None:
                self.drop(key)
            tail = self._tails[key] = _Tail(qid)
        else:
            self._tails.move_to_end(key)
        kept = tail.messages
        if kept and kept[-1][0] != first - 1:  # a gap: keep only what follows it
            self._forget(tail, len(kept))
        limit = self.max_body_bytes
        overhead = properties_bytes + MESSAGE_OVERHEAD
        offset = first
        added = 0
        for position, body in zip(positions, bodies, strict=True):
            size = len(body)
            if size > limit or properties_bytes > limit:  # not kept: restart after it
                tail.bytes += added
                self._bytes += added
                added = 0
                self._forget(tail, len(kept))
            else:
                held = size + overhead
                kept.append((offset, position, timestamp, properties, body, held))
                added += held
            offset += 1
        tail.bytes += added
        self._bytes += added
        if len(kept) > self.per_queue:
            self._forget(tail, len(kept) - self.per_queue)
        while self._bytes > self.max_bytes and self._tails:
            _, oldest = self._tails.popitem(last=False)
            self._bytes -= oldest.bytes

    def drop(self, key: bytes) -> None:
        """Forget ``key``'s tail (its last subscriber left)."""
        tail = self._tails.pop(key, None)
        if tail is not None:
            self._bytes -= tail.bytes

    def read(
        self,
        name: QueueName,
        qid: int,
        start: int,
        stop: int,
        *,
        log_start: int,
        attempt: int = 0,
    ) -> list[Message] | None:
        """Messages ``[start, stop)`` of the queue if its tail holds them all, else None."""
        tail = self._tails.get(name.key)
        if tail is None or tail.qid != qid:
            return None
        kept = tail.messages
        if not kept:
            return None
        first = kept[0][0]
        if start < first or stop - 1 > kept[-1][0] or kept[0][1] < log_start:
            return None
        self.hits += 1
        at = start - first
        return [
            Message(name, offset, position, timestamp, properties, len(body), body, False, attempt)
            for offset, position, timestamp, properties, body, _ in islice(
                kept, at, at + stop - start
            )
        ]

    def _forget(self, tail: _Tail, count: int) -> None:
        """Drop the ``count`` oldest messages of ``tail``."""
        kept = tail.messages
        gone = 0
        for _ in range(count):
            gone += kept.popleft()[5]
        tail.bytes -= gone
        self._bytes -= gone
