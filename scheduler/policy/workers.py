"""The fleet as the policy sees it: workers, their windows and who gets the next request.

The choice is a heap keyed by (most free window, least estimated load,
seeded random draw): O(log workers) per decision. A worker's key changes on
every dispatch, completion and window change. Such a change only marks the
worker dirty; the next :meth:`WorkerPool.best` pushes a fresh item for each
dirty worker and recognises older items as stale by their token (lazy
deletion). Workers that pull for themselves never ask for ``best``, so their
changes cost a dict insert and never a heap operation.

A worker's free room is its window's (``AimdWindow.room``: the free window,
or the slots earned while it drains down to a cut) plus any *swap* slots.
A swap is what a preemption on a worker over its window yields: stopping
the request frees no slot inside the window, so without it a draining
worker could not take the higher-band request it was stopped for, and
preemption would be useless exactly when every worker has just cut its
window. The swap lets the next dispatch to that worker replace the stopped
request one for one — the worker never holds more than it did — and it
lapses as soon as the window itself has room again.

A *draining* worker (it is leaving the fleet) has no room at all, swaps
included: it takes nothing new while its running requests finish.
"""

from __future__ import annotations

import heapq
import random

from scheduler.errors import UnknownWorkerError, WorkerExistsError
from scheduler.policy.entry import Entry
from scheduler.policy.window import AimdWindow
from scheduler.types import WindowConfig

__all__ = ["WorkerPool", "WorkerState"]

_GONE = -1


class WorkerState:
    __slots__ = (
        "dispatched",
        "draining",
        "load_tokens",
        "preempting",
        "running",
        "swaps",
        "token",
        "window",
        "worker_id",
    )

    def __init__(self, worker_id: str, config: WindowConfig) -> None:
        self.worker_id = worker_id
        self.window = AimdWindow(config)
        self.running: dict[str, Entry] = {}  # request id -> entry, in dispatch order
        self.load_tokens = 0
        self.dispatched = 0
        self.preempting = 0  # Preempts issued here and not answered yet
        self.swaps = 0  # slots owed to the requests preemptions here were for
        self.draining = False  # leaving: takes nothing new
        self.token = _GONE

    @property
    def free(self) -> int:
        """How many more requests it may take now (<= 0: none)."""
        if self.draining:
            return 0
        window = self.window
        running = len(self.running)
        base = window.limit - running
        if base > 0 or not self.swaps:
            return window.room(running)
        return max(window.room(running), 0) + self.swaps

    def take(self, dispatch_index: int) -> None:
        """Book a dispatch, before it joins ``running``."""
        window = self.window
        running = len(self.running)
        if window.limit - running > 0:
            self.swaps = 0  # the window has room of its own again
            window.took(running, dispatch_index)
        elif self.swaps:
            self.swaps -= 1
            window.took(running, dispatch_index, earned=False)
        else:
            window.took(running, dispatch_index)

    def release(self, *, swap: bool = False) -> None:
        """Book a request's leaving, after it left ``running``. ``swap``: it was
        stopped for a waiting higher-band request; if that frees no slot inside
        the window, the worker owes that request one."""
        running = len(self.running)
        if swap and self.window.limit - running <= 0:
            self.swaps += 1
        else:
            self.window.released(running)


class WorkerPool:
    __slots__ = ("_dirty", "_heap", "_next_token", "_rng", "workers")

    def __init__(self, rng: random.Random) -> None:
        self.workers: dict[str, WorkerState] = {}
        self._heap: list[tuple[int, int, float, int, WorkerState]] = []
        # A dict, not a set: its order decides the order of the random draws,
        # and that must not depend on object addresses for runs to repeat.
        self._dirty: dict[str, WorkerState] = {}
        self._next_token = 0
        self._rng = rng

    def add(self, worker_id: str, config: WindowConfig) -> WorkerState:
        if worker_id in self.workers:
            raise WorkerExistsError(f"worker {worker_id!r} is already added")
        worker = self.workers[worker_id] = WorkerState(worker_id, config)
        self.changed(worker)
        return worker

    def remove(self, worker_id: str) -> WorkerState:
        worker = self.get(worker_id)
        del self.workers[worker_id]
        self._dirty.pop(worker_id, None)
        worker.token = _GONE
        return worker

    def get(self, worker_id: str) -> WorkerState:
        worker = self.workers.get(worker_id)
        if worker is None:
            raise UnknownWorkerError(
                f"worker {worker_id!r} is not known (add_worker first; known: "
                f"{len(self.workers)} workers)"
            )
        return worker

    def changed(self, worker: WorkerState) -> None:
        """Re-rank ``worker`` (lazily) after its window, running set or load changed."""
        self._dirty[worker.worker_id] = worker

    def _flush(self) -> None:
        heap = self._heap
        rng = self._rng
        for worker in self._dirty.values():
            token = self._next_token
            self._next_token = token + 1
            worker.token = token
            heapq.heappush(heap, (-worker.free, worker.load_tokens, rng.random(), token, worker))
        self._dirty.clear()
        if len(heap) > 4 * len(self.workers) + 64:
            self._heap = heap = [item for item in heap if item[4].token == item[3]]
            heapq.heapify(heap)

    def best(self) -> WorkerState | None:
        """The worker with the most free window, or None when no window is free."""
        if self._dirty:
            self._flush()
        heap = self._heap
        while heap:
            item = heap[0]
            worker = item[4]
            if worker.token == item[3]:
                return worker if worker.free > 0 else None
            heapq.heappop(heap)
        return None

    def any_free(self) -> bool:
        return self.best() is not None
