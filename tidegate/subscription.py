"""A synchronous subscription: one Subscribe stream at a time, resumed across reconnects.

A background thread owns the stream: it writes the first request of each
stream (the whole subscription set, each lite-topic from the offset after the
last one handed over), reads frames into a bounded buffer, and reconnects
with backoff when the stream fails with UNAVAILABLE. The reader takes
messages from the buffer (iteration or :meth:`Subscription.get`); every
message taken gives a credit back to the server (see
:mod:`tidegate.session`). Any other failure ends the subscription: the
reader first gets what was buffered, then the error.

An add the server refuses (a tenant limit) does not end the stream: the
:meth:`Subscription.add` that waits for it raises the refusal
(``ResourceExhausted``) and the subscriptions held keep delivering. Only a
refused first request of a stream (the whole set, as :meth:`Client.subscribe`
or a reconnect sends it) ends the subscription with that error.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

import grpc

from broker.proto import broker_pb2 as pb
from broker.proto import broker_pb2_grpc as pb_grpc
from tidegate.connect import Connection
from tidegate.errors import (
    CallFailed,
    ClientClosed,
    DeadlineExceeded,
    Unavailable,
    from_rpc_error,
    refused,
)
from tidegate.publishing import refs_of
from tidegate.session import SessionState
from tidegate.values import Message, Notice, QueueRef, Start

__all__ = ["NoticeHandler", "Subscription", "log_notice", "open_refused", "refusal_of", "tell"]

log = logging.getLogger("tidegate.client")

NoticeHandler = Callable[[Notice], None]


def log_notice(notice: Notice) -> None:
    """The default notice handler: a warning in the log."""
    where = f" on {notice.ref}" if notice.ref is not None else ""
    log.warning("subscription notice%s (%s): %s", where, notice.code, notice.message)


def tell(handler: NoticeHandler, notice: Notice) -> None:
    """Call the user's notice handler; its failure is logged, not the stream's end."""
    try:
        handler(notice)
    except Exception:
        log.exception("the notice handler failed on %s", notice)


class Subscription:
    """Messages from many lite-topics, in order per lite-topic, exactly once on
    a plain stream (a consumer group redelivers what was not acked).

    Iterate over it, or call :meth:`get` with a timeout. Thread-safe: acks and
    changes may come from any thread. Close it (or use ``with``) when done.
    """

    def __init__(
        self,
        stub: pb_grpc.BrokerStub,
        conn: Connection,
        state: SessionState,
        *,
        on_notice: NoticeHandler,
        on_close: Callable[[Subscription], None],
    ) -> None:
        self._stub = stub
        self._conn = conn
        self._state = state
        self._on_notice = on_notice
        self._on_close = on_close
        self._cond = threading.Condition()
        self._buffer: deque[Message] = deque()
        self._requests: queue.SimpleQueue[pb.SubscribeRequest | None] | None = None
        self._call: grpc.Call | None = None
        self._failure: CallFailed | None = None
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tidegate-subscribe", daemon=True)
        self.reconnects = 0  # streams opened after the first

    def __repr__(self) -> str:
        return (
            f"Subscription(server={self._conn.server!r}, group={self._state.group!r}, "
            f"subscriptions={len(self._state.subscriptions())}, closed={self._closed})"
        )

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------ reading

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            message = self.get()
        except ClientClosed:
            raise StopIteration from None
        assert message is not None
        return message

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None if none came within ``timeout`` seconds.

        Raises the error that ended the subscription once the buffer is empty,
        and ClientClosed after :meth:`close`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._buffer:
                if self._failure is not None:
                    raise self._failure
                if self._closed:
                    raise ClientClosed("the subscription is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            message = self._buffer.popleft()
            self._state.taken(message)
            self._send()
            return message

    # ------------------------------------------------------------ changes

    def add(
        self,
        topic: str,
        lites: str | Iterable[str] | None = None,
        *,
        start: Start | str | int | None = None,
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """Subscribe to more lite-topics (or move the start of ones held).

        With ``wait``, raises the server's refusal (``ResourceExhausted`` for a
        tenant limit such as ``max_subscriptions``): none of ``lites`` is added,
        the subscription stays open and what it held keeps arriving. Without
        ``wait``, a refusal goes to the notice handler."""
        refs = refs_of(topic, lites)
        with self._cond:
            self._check()
            change = self._state.add(refs, Start.of(start), tell=not wait)
            self._send()
        if wait:
            self.wait_confirmed(change, timeout_s)

    def remove(
        self,
        topic: str,
        lites: str | Iterable[str] | None = None,
        *,
        wait: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """Stop receiving from lite-topics. Messages already buffered stay."""
        refs = refs_of(topic, lites)
        with self._cond:
            self._check()
            change = self._state.remove(refs)
            self._send()
        if wait:
            self.wait_confirmed(change, timeout_s)

    def wait_confirmed(self, change: int, timeout_s: float | None) -> None:
        """Wait until the server has confirmed change number ``change``; raise its
        refusal if it refused it."""
        limit = timeout_s if timeout_s is not None else self._confirm_limit()
        deadline = time.monotonic() + limit
        with self._cond:
            while self._state.confirmed < change:
                if self._failure is not None:
                    raise self._failure
                if self._closed:
                    raise ClientClosed("the subscription is closed")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded(
                        f"Subscribe: the server {self._conn.server} did not confirm the "
                        f"subscription change within {limit:g} s"
                    )
                self._cond.wait(remaining)
            refusal = refusal_of(self._state, change)
            if refusal is not None:
                raise refusal
            if self._failure is not None and self._state.open_refusal is not None:
                raise self._failure  # the whole set was refused: the subscription ended

    def _confirm_limit(self) -> float:
        give_up = self._conn.retry.give_up_s
        return self._conn.timeout_s + (give_up if give_up is not None else 0.0)

    @property
    def subscriptions(self) -> tuple[QueueRef, ...]:
        with self._cond:
            return self._state.subscriptions()

    def positions(self) -> dict[QueueRef, int]:
        """The next offset of each lite-topic (plain streams), to resume in a later process."""
        with self._cond:
            return self._state.positions()

    @property
    def buffered(self) -> int:
        """Messages received and waiting to be taken (at most ``buffer``)."""
        with self._cond:
            return len(self._buffer)

    @property
    def duplicates(self) -> int:
        """Redelivered messages dropped because they had been handed over already."""
        with self._cond:
            return self._state.duplicates

    # ----------------------------------------------------------- settling

    def ack(self, *messages: Message) -> None:
        """Acknowledge messages (consumer groups; a no-op on a plain stream)."""
        self._settle("ack", messages)

    def nack(self, *messages: Message) -> None:
        """Hand messages back for redelivery now (consumer groups)."""
        self._settle("nack", messages)

    def extend(self, *messages: Message, lease_s: float) -> None:
        """Extend the lease of the messages' lite-topics to now + lease_s (groups)."""
        with self._cond:
            self._check()
            self._state.extend((m.ref for m in messages), lease_s)
            self._send()

    def _settle(self, verb: str, messages: tuple[Message, ...]) -> None:
        with self._cond:
            self._check()
            self._state.settle(verb, messages)
            self._send()

    # ---------------------------------------------------------- lifecycle

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self, grace_s: float = 2.0) -> None:
        """End the stream. Acks sent before still reach the server: the client
        ends its side and the server applies what came before it, then ends the
        stream; after ``grace_s`` the call is cancelled. (The server forgets a
        plain subscription; a group's unacked messages come back after their
        lease.)"""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            call, requests = self._call, self._requests
            self._cond.notify_all()
        if requests is not None:
            requests.put(None)  # half-close: what was queued goes first
        if threading.current_thread() is not self._thread:
            self._thread.join(grace_s)
            if self._thread.is_alive() and call is not None:
                call.cancel()  # type: ignore[no-untyped-call]
                self._thread.join(10)
        self._on_close(self)

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ClientClosed("the subscription is closed")

    # ------------------------------------------------------- the stream

    def _send(self) -> None:
        """Write what the state holds on the current stream (caller holds the lock)."""
        requests = self._requests
        for request in self._state.take_requests():
            if requests is not None:
                requests.put(request)

    def _run(self) -> None:
        backoff = self._conn.retry.backoff(self._conn.rng)
        try:
            while not self._stop.is_set():
                error = self._one_stream(backoff.succeeded)
                if error is None:
                    return
                delay = backoff.failed(time.monotonic()) if error.retryable else None
                if delay is None:
                    self._fail(error)
                    return
                log.info("Subscribe: reconnecting in %.3f s after: %s", delay, error)
                if self._stop.wait(delay):
                    return
                self.reconnects += 1
        except BaseException as exc:  # a bug of ours: end the subscription, say why
            log.exception("subscription thread failed")
            self._fail(CallFailed(f"Subscribe: the client failed: {type(exc).__name__}: {exc}"))

    def _one_stream(self, connected: Callable[[], None]) -> CallFailed | None:
        """Run one stream to its end; the error that ended it (None: closed by us)."""
        requests: queue.SimpleQueue[pb.SubscribeRequest | None] = queue.SimpleQueue()
        with self._cond:
            if self._closed:
                return None
            requests.put(self._state.open_request())
            self._requests = requests
            call = self._stub.Subscribe(_drain(requests), metadata=self._conn.metadata)
            self._call = call
        error: CallFailed | None = None
        try:
            for frame in call:
                with self._cond:
                    messages = self._state.feed(frame)
                    self._send()
                    notices, self._state.notices = self._state.notices, []
                    self._buffer.extend(messages)
                    error = open_refused(self._state)
                    if error is not None:  # before a waiter sees the change confirmed
                        self._failure = error
                    self._cond.notify_all()
                if error is not None:
                    call.cancel()  # type: ignore[no-untyped-call]
                    return None if self._stop.is_set() else error
                connected()
                for notice in notices:
                    tell(self._on_notice, notice)
            error = Unavailable(f"Subscribe: the server {self._conn.server} ended the stream")
        except grpc.RpcError as exc:
            error = from_rpc_error(exc, method="Subscribe", server=self._conn.server)
        finally:
            requests.put(None)
            with self._cond:
                self._state.lost()
                self._requests = None
                self._call = None
        return None if self._stop.is_set() else error

    def _fail(self, error: CallFailed) -> None:
        with self._cond:
            self._failure = error
            self._cond.notify_all()


def refusal_of(state: SessionState, change: int) -> CallFailed | None:
    """The error for confirmed change ``change`` if the server refused it."""
    notice = state.refusal(change)
    if notice is None:
        return None
    return refused(notice.code, notice.message, method="Subscribe")


def open_refused(state: SessionState) -> CallFailed | None:
    """The error that ends the subscription when a stream's first request was refused."""
    notice = state.open_refusal
    if notice is None:
        return None
    return refused(notice.code, notice.message, method="Subscribe")


def _drain(
    requests: queue.SimpleQueue[pb.SubscribeRequest | None],
) -> Iterator[pb.SubscribeRequest]:
    while (request := requests.get()) is not None:
        yield request
