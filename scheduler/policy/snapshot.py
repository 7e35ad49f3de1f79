"""Frozen snapshots of the core's live state, for ``Policy.stats()``.

Metrics and the simulator read these values; they never reach into the
policy's mutable state (STYLE point 9).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType

from scheduler.policy.entry import Entry
from scheduler.policy.interface import QueueDiscipline
from scheduler.policy.tenants import TenantState
from scheduler.policy.workers import WorkerState
from scheduler.types import BandStats, TenantStats, WorkerStats

__all__ = ["band_stats", "tenant_stats", "worker_stats"]


def tenant_stats(
    tenants: Mapping[str, TenantState], discipline: QueueDiscipline
) -> Mapping[str, TenantStats]:
    return MappingProxyType(
        {
            name: TenantStats(
                queued=t.queued,
                in_flight=t.in_flight,
                admitted=t.admitted,
                dispatched=t.dispatched,
                completed=t.completed,
                preempted=t.preempted,
                served_input_tokens=t.served_input_tokens,
                served_output_tokens=t.served_output_tokens,
                charged=t.charged,
                weight=t.weight,
                virtual_counters=MappingProxyType(discipline.virtual_counters(name)),
                refusals=MappingProxyType(dict(t.refusals)),
                dropped=MappingProxyType(dict(t.dropped)),
            )
            for name, t in tenants.items()
        }
    )


def band_stats(
    band_queued: Mapping[int, int], running_by_band: Mapping[int, Mapping[str, Entry]]
) -> Mapping[int, BandStats]:
    """Per band, highest first."""
    running = Counter({band: len(entries) for band, entries in running_by_band.items()})
    return MappingProxyType(
        {
            band: BandStats(queued=band_queued.get(band, 0), in_flight=running[band])
            for band in sorted(set(band_queued) | set(running), reverse=True)
        }
    )


def worker_stats(workers: Mapping[str, WorkerState]) -> Mapping[str, WorkerStats]:
    return MappingProxyType(
        {
            worker_id: WorkerStats(
                window=w.window.limit,
                window_exact=w.window.value,
                in_flight=len(w.running),
                load_tokens=w.load_tokens,
                increases=w.window.increases,
                decreases=w.window.decreases,
            )
            for worker_id, w in workers.items()
        }
    )
