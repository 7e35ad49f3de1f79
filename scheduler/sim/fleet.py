"""A continuous-batching GPU worker, modelled on a virtual clock.

Pure: no clock, no I/O. The simulator hands each worker the sequences the
policy dispatched to it and the time ``now``; the worker says when its next
interesting moment is (a first token or a finish) and, when asked to advance,
what happened up to then.

The model, per worker, is a vLLM-style engine with chunked prefill:

* A dispatched sequence waits in the engine's own queue until the batch has
  a free slot (``max_batch``) and the KV cache has room for its whole
  footprint (prompt + all output tokens; a sequence bigger than the cache
  runs alone rather than never). The wait is the engine's queue depth.
* The engine runs iterations back to back. An iteration decodes one token
  for every sequence in the decode phase and prefills up to
  ``prefill_chunk_tokens`` prompt tokens of the sequences waiting for prefill,
  oldest first. It lasts ``prefill / prefill_tokens_per_s`` plus, when
  anything decodes, ``decode_step_s + decode_step_per_seq_s * batch``.
* A sequence's first token comes at the end of the iteration that finishes
  its prefill; it finishes at the end of the iteration that makes its last
  token.

Runs of identical decode-only iterations are taken in one jump (the batch
does not change between finishes), so a simulated hour costs a few events
per request, not one per token. A new sequence cuts such a run at the next
iteration boundary, where it can join: that is when a real engine would pick
it up.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal, Protocol

from scheduler.types import WorkerFeedback

__all__ = [
    "FleetConfig",
    "FleetModel",
    "SeqEvent",
    "ServiceSink",
    "Worker",
]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class FleetModel:
    """One worker's speed (CONTRACTS.md section 3, ``fleet.model``)."""

    prefill_tokens_per_s: float = 8000.0
    decode_step_s: float = 0.020
    decode_step_per_seq_s: float = 0.0004
    max_batch: int = 64
    kv_capacity_tokens: int = 200_000
    prefill_chunk_tokens: int = 2048

    def __post_init__(self) -> None:
        checks = (
            ("prefill_tokens_per_s", self.prefill_tokens_per_s > 0, "> 0"),
            ("decode_step_s", self.decode_step_s > 0, "> 0"),
            ("decode_step_per_seq_s", self.decode_step_per_seq_s >= 0, ">= 0"),
            ("max_batch", self.max_batch >= 1, ">= 1"),
            ("kv_capacity_tokens", self.kv_capacity_tokens >= 1, ">= 1"),
            ("prefill_chunk_tokens", self.prefill_chunk_tokens >= 1, ">= 1"),
        )
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(
                    f"fleet.model.{name}: must be {rule} (got {getattr(self, name)!r})"
                )

    def step_s(self, batch: int) -> float:
        """Duration of one decode step for ``batch`` sequences."""
        return self.decode_step_s + self.decode_step_per_seq_s * batch


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The simulated fleet: identical workers plus how often they report."""

    workers: int = 8
    model: FleetModel = field(default_factory=FleetModel)
    feedback_interval_s: float = 0.25  # the policy changes a window at most every 0.25 s

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"fleet.workers: must be >= 1 (got {self.workers!r})")
        if not self.feedback_interval_s > 0:
            raise ValueError(
                f"fleet.feedback_interval_s: must be > 0 (got {self.feedback_interval_s!r})"
            )


@dataclass(frozen=True, slots=True)
class SeqEvent:
    """Something a sequence did: its first token of this run, or its last token."""

    request_id: str
    kind: Literal["first_token", "finish"]
    at_s: float
    output_tokens: int  # tokens generated so far, over all runs of the request


class ServiceSink(Protocol):
    """Where the worker reports the service it gave and the time it was busy.

    ``service`` accrues linearly over ``[start_s, end_s]``; only useful work
    counts (a prompt recomputed after a preemption is not service).
    """

    def service(
        self, tenant: str, start_s: float, end_s: float, input_tokens: int, output_tokens: int
    ) -> None: ...

    def busy(self, worker_id: str, start_s: float, end_s: float) -> None: ...


@dataclass(slots=True, eq=False)
class _Seq:
    request_id: str
    tenant: str
    input_tokens: int
    kv_tokens: int  # reserved while in the batch
    prefill_total: int  # prompt plus any output recomputed after a preemption
    prefill_done: int
    served_input: int  # prompt tokens already counted as service (earlier runs included)
    generated: int  # output tokens made so far, all runs
    output_tokens: int
    added_s: float
    state: Literal["waiting", "prefill", "running", "gone"] = "waiting"
    joined_at: int = 0  # worker's decode counter when this sequence started decoding
    target: int = 0  # decode counter value at which it is finished


@dataclass(slots=True)
class _Phase:
    start_s: float
    end_s: float
    steps: int  # decode steps, each one token to every running sequence
    step_s: float
    prefill: list[tuple[_Seq, int]]  # (sequence, prompt tokens prefilled in this phase)
    decoded_at_start: int


class Worker:
    """One simulated GPU worker. Call :meth:`advance` up to ``now`` before ``add``/``preempt``."""

    def __init__(self, worker_id: str, model: FleetModel, sink: ServiceSink | None = None) -> None:
        self.worker_id = worker_id
        self.model = model
        self._sink = sink
        self._seqs: dict[str, _Seq] = {}
        self._waiting: deque[_Seq] = deque()
        self._prefill: deque[_Seq] = deque()
        self._running: dict[str, _Seq] = {}
        self._finish_heap: list[tuple[int, int, _Seq]] = []
        self._heap_seq = itertools.count()
        self._tenant_running: Counter[str] = Counter()
        self._decoded = 0
        self._kv_used = 0
        self._phase: _Phase | None = None
        self._events: list[SeqEvent] = []
        # Feedback accumulators since the last feedback() call.
        self._ttfts: list[float] = []
        self._busy_s = 0.0
        self._fb_since = 0.0

    # ------------------------------------------------------------ queries

    @property
    def in_flight(self) -> int:
        """Sequences on this worker, queued in the engine or in the batch."""
        return len(self._seqs)

    @property
    def busy(self) -> bool:
        return self._phase is not None

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def batch(self) -> int:
        return len(self._prefill) + len(self._running)

    @property
    def kv_usage(self) -> float:
        return min(1.0, self._kv_used / self.model.kv_capacity_tokens)

    def next_event_s(self) -> float | None:
        """When the current iteration (or run of iterations) ends; None when idle."""
        return self._phase.end_s if self._phase is not None else None

    # ------------------------------------------------------------ commands

    def add(
        self,
        request_id: str,
        tenant: str,
        input_tokens: int,
        output_tokens: int,
        now: float,
        *,
        done_output_tokens: int = 0,
        served_input_tokens: int = 0,
    ) -> None:
        """Start (or resume, after a preemption) a sequence on this worker."""
        if request_id in self._seqs:
            raise ValueError(f"request {request_id!r} is already on worker {self.worker_id}")
        self._run_until(now)
        done = min(max(0, done_output_tokens), output_tokens)
        seq = _Seq(
            request_id=request_id,
            tenant=tenant,
            input_tokens=input_tokens,
            kv_tokens=input_tokens + output_tokens,
            prefill_total=max(1, input_tokens + done),
            prefill_done=0,
            served_input=min(served_input_tokens, input_tokens),
            generated=done,
            output_tokens=output_tokens,
            added_s=now,
        )
        self._seqs[request_id] = seq
        self._waiting.append(seq)
        if self._phase is None:
            self._plan(now)
        elif self._can_admit(seq):
            self._cut(now)

    def preempt(self, request_id: str, now: float) -> tuple[int, int]:
        """Stop a sequence now; return (output tokens made, prompt tokens served) over all runs.

        The token of an iteration still in progress is lost, as on a real engine.
        """
        self._run_until(now)
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            raise KeyError(f"request {request_id!r} is not on worker {self.worker_id}")
        phase = self._phase
        state, seq.state = seq.state, "gone"
        if state == "waiting":
            self._waiting.remove(seq)
        elif state == "prefill":
            self._prefill.remove(seq)
            self._kv_used -= seq.kv_tokens
        else:
            del self._running[seq.request_id]
            self._tenant_running[seq.tenant] -= 1
            self._kv_used -= seq.kv_tokens
            made = self._decoded - seq.joined_at
            if phase is not None and not phase.prefill and phase.steps > 0:
                # Steps of the current phase completed before now count; the
                # one in progress does not.
                full = min(phase.steps, int((now - phase.start_s) / phase.step_s + _EPS))
                made += full
                if full and self._sink is not None:
                    end = phase.start_s + full * phase.step_s
                    self._sink.service(seq.tenant, phase.start_s, end, 0, full)
            seq.generated += made
        if phase is not None and not self._seqs:
            # Nothing left to compute: the engine stops the iteration here.
            phase.end_s = max(now, phase.start_s)
            phase.steps = 0
            phase.prefill = []
            self._run_until(now)
        elif phase is not None:
            self._cut(now)
        return seq.generated, seq.served_input

    def advance(self, now: float) -> list[SeqEvent]:
        """Run every iteration that ends at or before ``now``; return what happened since
        the previous call (including events of iterations run by ``add``/``preempt``)."""
        self._run_until(now)
        events, self._events = self._events, []
        return events

    @property
    def has_events(self) -> bool:
        """Events are waiting to be collected with :meth:`advance`."""
        return bool(self._events)

    def feedback(self, now: float) -> WorkerFeedback:
        """Saturation signals since the previous call (what a real worker would report)."""
        busy_s = self._busy_s
        if self._phase is not None and self._phase.start_s < now:
            busy_s += now - max(self._phase.start_s, self._fb_since)
        span = now - self._fb_since
        util = min(1.0, busy_s / span) if span > 0 else (1.0 if self.busy else 0.0)
        ttft = sum(self._ttfts) / len(self._ttfts) if self._ttfts else None
        tpot = self.model.step_s(len(self._running)) if self._running else None
        self._ttfts.clear()
        self._busy_s = 0.0
        self._fb_since = now
        return WorkerFeedback(
            ttft_s=ttft,
            tpot_s=tpot,
            queue_depth=len(self._waiting),
            kv_usage=self.kv_usage,
            gpu_util=util,
            gpu_mem=None,
        )

    # ------------------------------------------------------------ internals

    def _can_admit(self, seq: _Seq) -> bool:
        if self.batch >= self.model.max_batch:
            return False
        if self.batch == 0:
            return True  # an oversized sequence runs alone rather than never
        return self._kv_used + seq.kv_tokens <= self.model.kv_capacity_tokens

    def _admit(self) -> None:
        # FIFO with head-of-line blocking, as engines admit.
        while self._waiting and self._can_admit(self._waiting[0]):
            seq = self._waiting.popleft()
            seq.state = "prefill"
            self._kv_used += seq.kv_tokens
            self._prefill.append(seq)

    def _run_until(self, now: float) -> None:
        while self._phase is not None and self._phase.end_s <= now + _EPS:
            phase = self._phase
            self._apply(phase)
            self._fb_busy(phase)
            self._plan(phase.end_s)

    def _cut(self, now: float) -> None:
        """Let a change made at ``now`` take effect at the earliest iteration boundary.

        A phase planned at this very instant has not started: plan it again.
        A run of decode-only iterations ends at the first boundary >= now. An
        iteration with prefill in it is indivisible.
        """
        phase = self._phase
        if phase is None:
            return
        if phase.start_s >= now - _EPS:
            self._plan(phase.start_s)
            return
        if not phase.prefill and phase.steps > 1:
            done = math.ceil((now - phase.start_s) / phase.step_s - _EPS)
            phase.steps = max(0, min(phase.steps, done))
            phase.end_s = phase.start_s + phase.steps * phase.step_s
        self._run_until(now)

    def _plan(self, t: float) -> None:
        self._admit()
        n_run = len(self._running)
        if self._prefill:
            budget = self.model.prefill_chunk_tokens
            chunk: list[tuple[_Seq, int]] = []
            for seq in self._prefill:
                if budget <= 0:
                    break
                take = min(seq.prefill_total - seq.prefill_done, budget)
                chunk.append((seq, take))
                budget -= take
            prefill_s = sum(take for _, take in chunk) / self.model.prefill_tokens_per_s
            step = self.model.step_s(n_run) if n_run else 0.0
            self._phase = _Phase(
                t, t + prefill_s + step, 1 if n_run else 0, step, chunk, self._decoded
            )
        elif n_run:
            heap = self._finish_heap
            while self._running.get(heap[0][2].request_id) is not heap[0][2]:
                heapq.heappop(heap)  # preempted: dropped lazily
            steps = heap[0][0] - self._decoded
            step = self.model.step_s(n_run)
            self._phase = _Phase(t, t + steps * step, steps, step, [], self._decoded)
        else:
            self._phase = None

    def _fb_busy(self, phase: _Phase) -> None:
        start = max(phase.start_s, self._fb_since)
        if phase.end_s > start:
            self._busy_s += phase.end_s - start

    def _apply(self, phase: _Phase) -> None:
        start, end = phase.start_s, phase.end_s
        sink = self._sink
        if sink is not None and end > start:
            sink.busy(self.worker_id, start, end)
        if phase.steps:
            if sink is not None:
                for tenant, n in self._tenant_running.items():
                    if n:
                        sink.service(tenant, start, end, 0, n * phase.steps)
            self._decoded += phase.steps
            heap = self._finish_heap
            while heap and heap[0][0] <= self._decoded:
                _, _, seq = heapq.heappop(heap)
                if self._running.get(seq.request_id) is not seq:
                    continue  # preempted
                del self._running[seq.request_id]
                self._tenant_running[seq.tenant] -= 1
                seq.generated += self._decoded - seq.joined_at
                self._finish(seq, end)
        for seq, take in phase.prefill:
            if self._seqs.get(seq.request_id) is not seq or seq.state != "prefill":
                continue  # preempted during this iteration
            before = seq.prefill_done
            seq.prefill_done += take
            served = max(0, min(seq.prefill_done, seq.input_tokens) - max(before, seq.served_input))
            seq.served_input += served
            if seq.prefill_done < seq.prefill_total:
                if served and sink is not None:
                    sink.service(seq.tenant, start, end, served, 0)
                continue
            self._prefill.remove(seq)
            first = 1 if seq.generated < seq.output_tokens else 0
            seq.generated += first
            if sink is not None and (served or first):
                sink.service(seq.tenant, start, end, served, first)
            self._ttfts.append(end - seq.added_s)
            self._events.append(SeqEvent(seq.request_id, "first_token", end, seq.generated))
            if seq.generated >= seq.output_tokens:
                self._finish(seq, end)
            else:
                seq.state = "running"
                seq.joined_at = self._decoded
                seq.target = self._decoded + (seq.output_tokens - seq.generated)
                self._running[seq.request_id] = seq
                self._tenant_running[seq.tenant] += 1
                heapq.heappush(self._finish_heap, (seq.target, next(self._heap_seq), seq))

    def _finish(self, seq: _Seq, at: float) -> None:
        seq.state = "gone"
        self._kv_used -= seq.kv_tokens
        del self._seqs[seq.request_id]
        self._events.append(SeqEvent(seq.request_id, "finish", at, seq.generated))
