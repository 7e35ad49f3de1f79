"""Which running requests to stop so that waiting higher-band requests can run.

Called only when no worker has a free window. Each waiting request, highest
band first, claims one victim: a running request in the lowest band below
its own (sheddable, negative bands are lowest of all), and inside that band
the one dispatched last, because it has done the least work that a resume
must redo. Preempts already issued and not yet answered will free slots
for the highest waiting requests, so those requests claim no new victim.
Victims whose stop frees a slot inside their worker's window come first. On
a worker still holding more than a window that was just cut, a stop frees no
such slot; it yields a *swap* instead (the next dispatch there replaces the
stopped request one for one, see ``WorkerState``). Such victims are taken
only after the others in their band: when every worker has just cut its
window at once, they are all there is, and a top-band request must not
wait for the fleet to drain. Requests on a draining worker (one leaving the
fleet) are never victims: the slot a stop frees there takes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from scheduler.policy.entry import Entry
from scheduler.policy.workers import WorkerState

__all__ = ["choose_victims"]


def _candidates(band: dict[str, Entry], workers: Mapping[str, WorkerState]) -> Iterator[Entry]:
    """Latest dispatched first; those on workers over their window after all others."""
    swaps: list[Entry] = []
    for entry in reversed(band.values()):
        if entry.preempting:
            continue
        assert entry.worker_id is not None
        worker = workers[entry.worker_id]
        if worker.draining:
            continue
        if len(worker.running) - worker.preempting > worker.window.limit:
            swaps.append(entry)
            continue
        yield entry
    for entry in swaps:
        if not entry.preempting:
            yield entry


def choose_victims(
    waiting: list[tuple[int, int]],
    running_by_band: Mapping[int, dict[str, Entry]],
    pending: int,
    may_preempt: Callable[[int, int], bool],
    workers: Mapping[str, WorkerState],
) -> list[Entry]:
    """Victims for ``waiting`` ((band, queued count), highest band first).

    Marks each victim (``entry.preempting``) and its worker's pending count,
    so a later call never names the same request twice.
    """
    victim_bands = sorted(band for band, running in running_by_band.items() if running)
    pools = {band: _candidates(running_by_band[band], workers) for band in victim_bands}
    chosen: list[Entry] = []
    skip = pending
    for band, count in waiting:
        need = count
        if skip:
            covered = min(skip, need)
            skip -= covered
            need -= covered
        while need > 0:
            victim: Entry | None = None
            for victim_band in victim_bands:
                if victim_band >= band:
                    break
                if not may_preempt(band, victim_band):
                    continue
                victim = next(pools[victim_band], None)
                if victim is not None:
                    break
            if victim is None:
                break  # nothing below this band to stop; a lower band may still find some
            assert victim.worker_id is not None
            victim.preempting = True
            workers[victim.worker_id].preempting += 1
            chosen.append(victim)
            need -= 1
    return chosen
