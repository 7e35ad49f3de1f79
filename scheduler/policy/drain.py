"""Paced reduction: how a worker left holding more than its window gets back inside it.

A cut (or a hot reload) can leave a worker holding more requests than its
new window. Blocking it until enough of them finish is the obvious rule, and
the wrong one: the workers of a fleet see the same overload at the same
report, so they all cut at once and *nobody* dispatches for as long as the
excess takes to drain (seconds on an LLM engine, whose requests live for
seconds). Every tenant then waits, the light and the urgent ones included.

So the reduction is paced, in the spirit of TCP's proportional rate
reduction: while the worker is over its window, each request that leaves it
earns back a fraction of a slot, ``min(window, in_flight at the cut / 2) /
in_flight at the cut``. The first release always earns a whole slot (the
sum is rounded up), so a worker never goes silent; in-flight falls towards
the window monotonically and reaches it after at most ``min(in_flight at the
cut, 2 x excess)`` releases; and it never rises above what it was at the
cut, because each dispatch spends one earned slot.
"""

from __future__ import annotations

__all__ = ["Drain"]


class Drain:
    """The reduction of one worker, from the cut until it is back inside its window.

    ``start`` holds the in-flight count at the cut; 0 means no reduction is
    under way.
    """

    __slots__ = ("released", "start", "taken")

    def __init__(self) -> None:
        self.start = 0
        self.released = 0  # requests that left the worker since the cut
        self.taken = 0  # dispatches spent from the earned slots

    @property
    def active(self) -> bool:
        return self.start > 0

    def begin(self, in_flight: int, limit: int) -> None:
        """The window became ``limit`` while the worker holds ``in_flight``."""
        if in_flight > limit:
            self.start = in_flight
            self.released = 0
            self.taken = 0
        else:
            self.start = 0

    def end(self) -> None:
        self.start = 0

    def earned(self, limit: int) -> int:
        """Slots earned and not yet spent (0 when no reduction is under way)."""
        start = self.start
        if not start:
            return 0
        # ceil(released x min(limit, start / 2) / start), in integers.
        numerator = self.released * min(2 * limit, start)
        return -(-numerator // (2 * start)) - self.taken
