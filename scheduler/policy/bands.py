"""The ``tidegate`` discipline: strict priority bands, VTC inside each band.

By default a higher band is always served first. With ``band_shares`` set
(highest band first, e.g. ``(6, 3, 1)``), bands with waiting requests share
service by those weights instead, with the same virtual-counter scheme one
level up, so a low band is never starved forever. Shares go by rank among
the bands seen so far (highest priority = rank 0); bands ranked past the
tuple's end take its last share. The sharing only bites when the fleet is
saturated: while windows are free, every waiting request is dispatched.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from scheduler.policy.entry import Entry
from scheduler.policy.fair import FairBand

__all__ = ["BandedFair"]


class BandedFair:
    name = "tidegate"
    preemptive = True

    __slots__ = ("_ascending", "_band_counter", "_band_time", "_bands", "_order", "_shares")

    def __init__(self, band_shares: tuple[float, ...] | None = None) -> None:
        self._bands: dict[int, FairBand] = {}
        self._order: list[int] = []  # band priorities, highest first
        self._ascending: list[int] = []  # the same, lowest first (for bisect)
        self._shares = band_shares
        self._band_counter: dict[int, float] = {}
        self._band_time = 0.0

    def set_band_shares(self, shares: tuple[float, ...] | None) -> None:
        self._shares = shares

    def _band(self, priority: int) -> FairBand:
        band = self._bands.get(priority)
        if band is None:
            band = self._bands[priority] = FairBand()
            bisect.insort(self._ascending, priority)
            self._order = self._ascending[::-1]
            self._band_counter[priority] = 0.0
        return band

    def _share(self, priority: int) -> float:
        assert self._shares is not None
        rank = self._order.index(priority)
        return self._shares[min(rank, len(self._shares) - 1)]

    def _lift(self, priority: int) -> None:
        """A band that starts waiting again gets no credit for its idle time."""
        active = [self._band_counter[p] for p in self._order if self._bands[p].queued > 0]
        floor = min(active) if active else self._band_time
        self._band_counter[priority] = max(self._band_counter[priority], floor)

    def push(self, entry: Entry) -> None:
        band = self._band(entry.band)
        if band.queued == 0 and self._shares is not None:
            self._lift(entry.band)
        band.push(entry)

    def requeue(self, entry: Entry) -> None:
        band = self._band(entry.band)
        if band.queued == 0 and self._shares is not None:
            self._lift(entry.band)
        band.requeue(entry)

    def discard(self, entry: Entry) -> None:
        self._bands[entry.band].discard(entry)

    def pop(self, cost: Callable[[Entry], float]) -> Entry | None:
        if self._shares is None:
            for priority in self._order:
                band = self._bands[priority]
                if band.queued:
                    return band.pop(cost)
            return None
        chosen: int | None = None
        for priority in self._order:
            if self._bands[priority].queued and (
                chosen is None or self._band_counter[priority] < self._band_counter[chosen]
            ):
                chosen = priority
        if chosen is None:
            return None
        self._band_time = max(self._band_time, self._band_counter[chosen])
        charged = 0.0

        def counted(entry: Entry) -> float:
            nonlocal charged
            charged = cost(entry)
            return charged

        entry = self._bands[chosen].pop(counted)
        # The band counter takes the same charge as the tenant's flow did.
        self._band_counter[chosen] += charged / self._share(chosen)
        return entry

    def charge(self, entry: Entry, amount: float) -> None:
        self._bands[entry.band].charge(entry, amount)
        if self._shares is not None:
            self._band_counter[entry.band] += amount / self._share(entry.band)

    def may_preempt(self, waiting_band: int, victim_band: int) -> bool:
        if waiting_band <= victim_band:
            return False
        if self._shares is None:
            return True
        # With shares, stopping a lower band is fair only while the waiting band
        # is behind it in share-normalised service; else preemption would undo
        # the very share the lower band is owed.
        return self._band_counter[waiting_band] < self._band_counter[victim_band]

    def virtual_counters(self, tenant: str) -> dict[int, float]:
        out: dict[int, float] = {}
        for priority, band in self._bands.items():
            flow = band.flows.get(tenant)
            if flow is not None:
                out[priority] = flow.counter
        return out

    def band_counters(self) -> dict[int, float]:
        return dict(self._band_counter)
