"""What a tenant is charged for its requests: the VTC cost ledger.

The cost of a request is ``input_w x input + output_w x output`` tokens.
The estimate is booked at dispatch; a preemption re-books it to the work
done (the prompt tokens processed, plus the output made so far) and a resume
adds an estimate for the remaining prompt and output only; completion
re-books it to the real usage.
So a tenant's charge ends equal to what it was served, however often its
requests were stopped, and it is never charged for work a preemption threw
away. A lost lease, a removed worker, a drop or a cancel of a queued
request re-books to the work known done.

Every re-booking reaches the discipline as a correction, so the virtual
counters that order the tenants follow the same ledger.
"""

from __future__ import annotations

from scheduler.policy.entry import Entry
from scheduler.policy.interface import QueueDiscipline

__all__ = ["Ledger"]


class Ledger:
    __slots__ = ("_discipline", "input_w", "output_w")

    def __init__(self, input_w: float, output_w: float, discipline: QueueDiscipline) -> None:
        self.input_w = input_w
        self.output_w = output_w
        self._discipline = discipline

    def estimate(self, entry: Entry) -> float:
        """Book the dispatch-time estimate (the discipline's ``cost`` callback)."""
        request = entry.request
        # A resume books only what is left: work done is booked already.
        input_left = max(request.input_tokens - entry.input_done, 0)
        output_left = max(request.output_tokens - entry.done_output_tokens, 0)
        cost = self.input_w * input_left + self.output_w * output_left
        entry.charged += cost
        entry.tenant.charged += cost
        return cost

    def settle(self, entry: Entry, target: float) -> None:
        """Re-book the entry's charge to ``target`` and tell the discipline the change."""
        delta = target - entry.charged
        if delta:
            entry.charged = target
            entry.tenant.charged += delta
            self._discipline.charge(entry, delta)

    def settle_done(self, entry: Entry) -> None:
        """Re-book to the work known done: the prompt tokens processed, plus the
        output reported by preemptions. Zero for a request lost or dropped
        before its prompt ever ran: its tenant was served nothing."""
        self.settle(
            entry, self.input_w * entry.input_done + self.output_w * entry.done_output_tokens
        )

    def settle_usage(self, entry: Entry, input_tokens: int, output_tokens: int) -> None:
        self.settle(entry, self.input_w * input_tokens + self.output_w * output_tokens)
