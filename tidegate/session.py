"""One subscription's state, without I/O: what to send, what to hand over.

The sync and async clients drive the same :class:`SessionState`: they feed
it the frames a Subscribe stream returns, hand the user what it returns,
and write what :meth:`SessionState.take_requests` holds. All the rules live
here, so they are tested without a server:

* **Resume, exactly once and in order.** On a plain stream (no consumer
  group) the state remembers, per lite-topic, the next offset it expects.
  A new stream (after a reconnect) re-adds every lite-topic from that
  offset, and a delivery below it (a duplicate the old stream had already
  sent) is dropped. A chunked body counts only once it is complete, so a
  stream cut in the middle of one resumes at that message. In a consumer
  group the server keeps the position; unacked messages come back with
  ``attempt + 1`` by design, so nothing is dropped there.
* **Credits = a bounded buffer.** The server sends at most the credits
  granted. The state keeps ``outstanding + buffered <= window`` (granted
  but not received, plus received but not yet taken by the user) and tops
  credits up when the user has taken a quarter of the window, so a slow
  reader holds at most ``window`` messages and the server holds none.
* **Confirmed changes.** Every add or remove gets a number; the server
  answers each change request with one ``changed`` frame, in order, before
  any delivery drawn from the new set. A waiter for change n returns once
  ``confirmed >= n``. A new stream's first request re-adds the whole set,
  so its confirmation confirms every change made so far.
* **Refused adds.** The server may refuse an add request (a tenant limit:
  RESOURCE_EXHAUSTED) in its confirmation, without ending the stream; it
  refuses the request's adds all or nothing. The state then forgets those
  lite-topics (or gives back the start of one it held before) and keeps the
  refusal for the waiter of that change (:meth:`SessionState.refusal`), or,
  when nobody waits, hands it over as a notice. A refused first request of a
  stream (the whole set) is :attr:`SessionState.open_refusal`: the clients
  end the subscription with it.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from broker.proto import broker_pb2 as pb
from tidegate.errors import STATUS_NAMES, InvalidArgument
from tidegate.values import Message, Notice, QueueRef, Start
from tidegate.wire import message, run_messages, subscription

__all__ = ["SessionState"]

_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_BATCH = 1000  # the server's cap on open.max_batch_messages

Key = tuple[str, str]  # (topic, lite_topic): cheaper than QueueRef in the hot path


@dataclass(slots=True)
class _Entry:
    start: Start
    expected: int | None = None  # plain streams: the next offset to hand over
    taken: int | None = None  # plain streams: after the last message the user took


@dataclass(slots=True)
class _Pending:
    """A change request on the stream, waiting for its confirmation."""

    change: int
    opening: bool = False  # the stream's first request (the whole set)
    tell: bool = False  # a refusal becomes a notice: nobody waits for it
    # adds: (key, the entry the add made, the entry it replaced)
    undo: tuple[tuple[Key, _Entry, _Entry | None], ...] = ()


_MAX_REFUSALS = 1024  # refusals kept for waiters that gave up


@dataclass(slots=True)
class _Chunked:
    delivery: pb.Delivery
    keep: bool
    parts: list[bytes] = field(default_factory=list)


class SessionState:
    """The state of one subscription across any number of streams (reconnects)."""

    def __init__(
        self,
        *,
        group: str = "",
        lease_s: float | None = None,
        max_batch: int | None = None,
        max_lease: int | None = None,
        window: int = 1000,
    ) -> None:
        if group and _GROUP.fullmatch(group) is None:
            raise InvalidArgument(
                f"group {group!r} breaks the rule: 1 to 64 characters of [A-Za-z0-9_.-], "
                "starting with a letter or digit"
            )
        if lease_s is not None and not 0 < lease_s <= 12 * 3600:
            raise InvalidArgument(f"lease_s is {lease_s}; it must be in (0, 43200]")
        if max_batch is not None and not 1 <= max_batch <= _MAX_BATCH:
            raise InvalidArgument(f"max_batch is {max_batch}; it must be in [1, {_MAX_BATCH}]")
        if max_lease is not None and not 1 <= max_lease <= _MAX_BATCH:
            raise InvalidArgument(f"max_lease is {max_lease}; it must be in [1, {_MAX_BATCH}]")
        if window < 1:
            raise InvalidArgument(f"buffer is {window} messages; it must be >= 1")
        self.group = group
        self._lease_s = lease_s or 0.0
        self._max_batch = max_batch or 0
        self._max_lease = max_lease or 0
        self.window = window
        self._threshold = max(1, window // 4)
        self._subs: dict[Key, _Entry] = {}
        self._connected = False
        self._outstanding = 0  # credits granted on this stream, not used yet
        self._buffered = 0  # messages handed over, not yet taken by the user
        self._outbox: list[pb.SubscribeRequest] = []
        self._changes = 0
        self._confirmed = 0
        self._inflight: deque[_Pending] = deque()
        self._refusals: dict[int, Notice] = {}
        self.open_refusal: Notice | None = None  # the stream's first request was refused
        self._chunk: _Chunked | None = None
        self._unsent_settles: list[pb.SubscribeRequest] = []
        self.notices: list[Notice] = []
        self.duplicates = 0  # deliveries dropped because they were seen already

    # ----------------------------------------------------------- observers

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def confirmed(self) -> int:
        """The highest change number the server has confirmed."""
        return self._confirmed

    @property
    def changes(self) -> int:
        return self._changes

    @property
    def buffered(self) -> int:
        return self._buffered

    @property
    def outstanding(self) -> int:
        return self._outstanding

    def subscriptions(self) -> tuple[QueueRef, ...]:
        return tuple(QueueRef(t, lite) for t, lite in self._subs)

    def positions(self) -> dict[QueueRef, int]:
        """Plain streams: per lite-topic, the offset after the last message the user
        took. Keep these to resume in a later process with ``Start.at(offset)``."""
        return {
            QueueRef(t, lite): e.taken for (t, lite), e in self._subs.items() if e.taken is not None
        }

    def take_requests(self) -> list[pb.SubscribeRequest]:
        """Requests to write on the current stream, in order."""
        out, self._outbox = self._outbox, []
        return out

    # ------------------------------------------------------------ streams

    def open_request(self) -> pb.SubscribeRequest:
        """The first request of a new stream: the whole set, from where it left off."""
        self._connected = True
        self._chunk = None
        self._outbox = []
        grant = max(0, self.window - self._buffered)
        self._outstanding = grant
        request = pb.SubscribeRequest(
            open=pb.SubscribeOpen(
                group=self.group,
                lease_s=self._lease_s,
                max_batch_messages=self._max_batch,
                max_lease_messages=self._max_lease,
                compact=True,
            ),
            add=[
                subscription(QueueRef(t, lite), self._resume_start(e))
                for (t, lite), e in self._subs.items()
            ],
            credits=grant,
        )
        for pending in self._unsent_settles:
            request.ack.extend(pending.ack)
            request.nack.extend(pending.nack)
            request.extend.extend(pending.extend)
        self._unsent_settles = []
        self._inflight.clear()
        self.open_refusal = None
        if request.add:
            self._inflight.append(_Pending(self._changes, opening=True))
        else:
            self._confirmed = self._changes  # nothing is held on a fresh stream
        return request

    def lost(self) -> None:
        """The stream ended: nothing granted survives it, a partial body is dropped."""
        self._connected = False
        self._outstanding = 0
        self._chunk = None
        self._inflight.clear()
        for request in self._outbox:  # acks and extends go out again on the next stream
            if request.ack or request.nack or request.extend:
                self._unsent_settles.append(
                    pb.SubscribeRequest(ack=request.ack, nack=request.nack, extend=request.extend)
                )
        self._outbox = []

    def _resume_start(self, entry: _Entry) -> Start:
        if not self.group and entry.expected is not None:
            return Start.at(entry.expected)
        return entry.start

    # ------------------------------------------------------------ changes

    def add(self, refs: Sequence[QueueRef], start: Start, *, tell: bool = False) -> int:
        """Subscribe to ``refs`` from ``start`` (moving the start of any already held).

        Returns the change's number (0 for no refs: nothing to wait for).
        ``tell``: nobody will wait for it, so a refusal becomes a notice
        instead of :meth:`refusal`'s answer."""
        if not refs:
            return 0
        self._changes += 1
        undo: list[tuple[Key, _Entry, _Entry | None]] = []
        for ref in refs:
            # Until the server confirms, accept whatever comes: deliveries drawn
            # from an old cursor arrive before the confirmation and are new.
            key = (ref.topic, ref.lite_topic)
            entry = _Entry(start)
            undo.append((key, entry, self._subs.get(key)))
            self._subs[key] = entry
        if self._connected:
            self._outbox.append(pb.SubscribeRequest(add=[subscription(r, start) for r in refs]))
            self._inflight.append(_Pending(self._changes, tell=tell, undo=tuple(undo)))
        return self._changes

    def refusal(self, change: int) -> Notice | None:
        """Why the server refused add change ``change`` (once; None: not refused)."""
        return self._refusals.pop(change, None)

    def remove(self, refs: Sequence[QueueRef]) -> int:
        if not refs:
            return 0
        self._changes += 1
        for ref in refs:
            self._subs.pop((ref.topic, ref.lite_topic), None)
        if self._connected:
            self._outbox.append(
                pb.SubscribeRequest(
                    remove=[pb.QueueRef(topic=r.topic, lite_topic=r.lite_topic) for r in refs]
                )
            )
            self._inflight.append(_Pending(self._changes))
        return self._changes

    # ------------------------------------------------------------ settling

    def settle(self, verb: str, messages: Iterable[Message]) -> None:
        """Ack or nack messages (groups only: a plain stream keeps no server state)."""
        if not self.group:
            return
        by_queue: dict[Key, list[int]] = {}
        for m in messages:
            by_queue.setdefault((m.topic, m.lite_topic), []).append(m.offset)
        if not by_queue:
            return
        settles = [
            pb.Settle(topic=t, lite_topic=lite, offsets=o) for (t, lite), o in by_queue.items()
        ]
        if verb == "ack":
            request = pb.SubscribeRequest(ack=settles)
        else:
            request = pb.SubscribeRequest(nack=settles)
        self._queue_settle(request)

    def extend(self, refs: Iterable[QueueRef], lease_s: float) -> None:
        if not self.group:
            return
        if not 0 < lease_s <= 12 * 3600:
            raise InvalidArgument(f"lease_s is {lease_s}; it must be in (0, 43200]")
        extends = [
            pb.ExtendLease(topic=r.topic, lite_topic=r.lite_topic, lease_s=lease_s)
            for r in dict.fromkeys(refs)
        ]
        if extends:
            self._queue_settle(pb.SubscribeRequest(extend=extends))

    def _queue_settle(self, request: pb.SubscribeRequest) -> None:
        if self._connected:
            self._outbox.append(request)
        else:
            self._unsent_settles.append(request)

    # ------------------------------------------------------------ receiving

    def taken(self, message: Message) -> None:
        """The user took ``message`` from the buffer: its room goes back to the server."""
        self._buffered = max(0, self._buffered - 1)
        if not self.group:
            entry = self._subs.get((message.topic, message.lite_topic))
            if entry is not None:
                entry.taken = message.offset + 1
        self._top_up()

    def feed(self, frame: pb.SubscribeResponse) -> list[Message]:
        """The messages a frame completes, in order (duplicates and removed queues dropped)."""
        out: list[Message] = []
        if frame.HasField("changed"):
            self._on_changed(frame.changed)
        if frame.HasField("notice"):
            n = frame.notice
            ref = QueueRef(n.topic, n.lite_topic) if n.topic else None
            self.notices.append(_notice(n, ref))
        for d in frame.messages:
            self._outstanding = max(0, self._outstanding - 1)
            if d.chunked:
                # The body follows in body_chunk frames; it counts once complete.
                self._chunk = _Chunked(d, self._wanted(d))
                continue
            if self._wanted(d):
                self._seen(d)
                out.append(message(d))
        for run in frame.runs:  # after `messages`: a queue is in one or the other
            out += self._taken_run(run)
        if frame.HasField("body_chunk") and self._chunk is not None:
            chunk = self._chunk
            if chunk.keep:
                chunk.parts.append(frame.body_chunk.data)
            if frame.body_chunk.last:
                self._chunk = None
                if chunk.keep:
                    parts, chunk.parts = chunk.parts, []
                    body = b"".join(parts)
                    del parts
                    self._seen(chunk.delivery)
                    out.append(message(chunk.delivery, body))
        self._buffered += len(out)
        self._top_up()
        return out

    def _taken_run(self, run: pb.DeliveryRun) -> list[Message]:
        """:meth:`_wanted` and :meth:`_seen` for a run of one queue's deliveries."""
        count = len(run.offsets)
        self._outstanding = max(0, self._outstanding - count)
        entry = self._subs.get((run.topic, run.lite_topic))
        if entry is None or not count:
            return []  # removed meanwhile
        start = 0
        if not self.group:
            if entry.expected is not None:  # offsets ascend within a run
                start = bisect_left(run.offsets, entry.expected)
                self.duplicates += start
            if start < count:
                entry.expected = run.offsets[-1] + 1
        return run_messages(run, start) if start < count else []

    def _wanted(self, d: pb.Delivery) -> bool:
        entry = self._subs.get((d.topic, d.lite_topic))
        if entry is None:
            return False  # removed meanwhile
        if self.group or entry.expected is None or d.offset >= entry.expected:
            return True
        self.duplicates += 1
        return False

    def _seen(self, d: pb.Delivery) -> None:
        entry = self._subs.get((d.topic, d.lite_topic))
        if entry is not None and not self.group:
            entry.expected = d.offset + 1

    def _on_changed(self, changed: pb.SubscriptionsChanged) -> None:
        pending = self._inflight.popleft() if self._inflight else None
        if pending is not None:
            self._confirmed = max(self._confirmed, pending.change)
        if changed.HasField("refused"):
            self._on_refused(changed, pending)
            return
        if self.group:
            return
        for started in changed.started:
            entry = self._subs.get((started.topic, started.lite_topic))
            if entry is not None:
                entry.expected = started.next_offset

    def _on_refused(self, changed: pb.SubscriptionsChanged, pending: _Pending | None) -> None:
        refs = [QueueRef(r.topic, r.lite_topic) for r in changed.refused_adds]
        notice = _notice(changed.refused, refs[0] if len(refs) == 1 else None)
        if pending is not None and pending.opening:
            self.open_refusal = notice
            return
        if pending is None or pending.tell:
            self.notices.append(notice)
        else:
            if len(self._refusals) >= _MAX_REFUSALS:
                del self._refusals[next(iter(self._refusals))]
            self._refusals[pending.change] = notice
        if pending is None:
            return
        for key, made, before in pending.undo:
            if self._subs.get(key) is not made:
                continue  # changed again since: the later change rules
            if before is None:
                del self._subs[key]
                continue
            # The server kept the old subscription: keep what was seen since.
            if made.expected is not None:
                before.expected = made.expected
            if made.taken is not None:
                before.taken = made.taken
            self._subs[key] = before

    def _top_up(self) -> None:
        if not self._connected:
            return
        room = self.window - self._buffered - self._outstanding
        if room >= self._threshold:
            self._outstanding += room
            self._outbox.append(pb.SubscribeRequest(credits=room))


def _notice(n: pb.StreamNotice, ref: QueueRef | None) -> Notice:
    name = STATUS_NAMES[n.code] if 0 <= n.code < len(STATUS_NAMES) else str(n.code)
    return Notice(name, n.message, ref)
