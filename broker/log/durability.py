"""How appends become durable: group commit and the interval flusher.

Group commit: appenders that need durability call
:meth:`GroupCommit.wait_durable` with the end of their write. The first one to
find no fsync in flight *leads*: it asks the log for the active segment and
the highest position written so far, fsyncs, and publishes that position as
synced. Everyone whose end it covers returns without an fsync of their own;
the rest wait for the next round. So N concurrent appends cost between 1 and
about N/2 fsyncs instead of N, and no appender waits for more than two fsyncs
after its write.

Why fsyncing only the active segment is enough: the log fsyncs a segment
before it creates the next one, and reports that with :meth:`advance`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from broker.errors import FailedPrecondition, StoreClosed
from broker.log.segment import Segment

__all__ = ["GroupCommit", "IntervalFlusher"]

# Returns the active segment, already pinned (None once the log is closed),
# and the highest position written to it.
Snapshot = Callable[[], tuple[Segment | None, int]]


class GroupCommit:
    """Shares each fsync among every appender whose data it covers."""

    def __init__(
        self,
        synced_end: int,
        snapshot: Snapshot,
        fsync: Callable[[Segment], None],
        where: str,
    ) -> None:
        self._snapshot = snapshot
        self._fsync = fsync
        self._where = where
        self._cond = threading.Condition(threading.Lock())
        self._synced_end = synced_end
        self._syncing = False
        self._failure: BaseException | None = None

    @property
    def synced_end(self) -> int:
        """Every byte before this position is on disk."""
        with self._cond:
            return self._synced_end

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def fail(self, error: BaseException) -> None:
        """Record an I/O error that makes the unsynced data untrustworthy; wake waiters."""
        with self._cond:
            if self._failure is None:
                self._failure = error
            self._cond.notify_all()

    def refusal(self) -> FailedPrecondition:
        """The error every write gets once a failure has been recorded."""
        return FailedPrecondition(
            f"the log in {self._where} refuses writes after an I/O error ({self._failure}); "
            "reopen it to recover (the kernel may have dropped unsynced pages)"
        )

    def advance(self, position: int) -> None:
        """Bytes before ``position`` were made durable elsewhere (a rotation's fsync)."""
        with self._cond:
            if position > self._synced_end:
                self._synced_end = position
                self._cond.notify_all()

    def wait_durable(self, target: int) -> None:
        """Return once every byte before ``target`` is on disk; lead an fsync if none runs."""
        while True:
            with self._cond:
                while True:
                    if self._synced_end >= target:
                        return
                    if self._failure is not None:
                        raise self.refusal() from self._failure
                    if not self._syncing:
                        self._syncing = True
                        break
                    self._cond.wait()
            self._lead()

    def _lead(self) -> None:
        failure: OSError | None = None
        segment: Segment | None = None
        covered = 0
        try:
            segment, covered = self._snapshot()
            if segment is not None:
                try:
                    self._fsync(segment)
                except OSError as exc:
                    failure = exc
                finally:
                    segment.unpin()
        finally:
            with self._cond:
                self._syncing = False
                if failure is not None:
                    self._failure = failure
                elif segment is not None and covered > self._synced_end:
                    self._synced_end = covered
                self._cond.notify_all()
        if segment is None:
            raise StoreClosed()
        if failure is not None:
            raise self.refusal() from failure


class IntervalFlusher:
    """The INTERVAL policy's background thread.

    It sleeps until data is marked dirty, lets up to ``interval_s`` of writes
    gather, then syncs them; so data is on disk at most about ``interval_s``
    (plus one fsync) after it was written.
    """

    def __init__(self, interval_s: float, sync: Callable[[], None], name: str) -> None:
        self._interval_s = interval_s
        self._sync = sync
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def mark_dirty(self) -> None:
        if not self._dirty.is_set():
            self._dirty.set()

    def stop(self) -> None:
        """Stop the thread and wait for it; the caller syncs whatever is left."""
        self._stop.set()
        self._dirty.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._dirty.wait()
            if self._stop.wait(self._interval_s):
                return
            self._dirty.clear()
            try:
                self._sync()
            except (FailedPrecondition, OSError):
                return  # the log has recorded the failure; its next write reports it
