"""The figures only a request's moves can give: waits, first tokens, per-worker counts.

:class:`RequestMetrics` is a :class:`~scheduler.runtime.observer.RequestObserver`:
the runtime calls it on the event loop as requests are granted, requeued
and finished; :meth:`RequestMetrics.snapshot` is read on the same loop at
scrape time. It keeps one small record per live request (when it last
entered the queue, whether its first token was seen), dropped when the
request ends.

Labels stay bounded: tenants are the configured ones (only they can
submit), a band is a priority (at most ``max_bands`` distinct values, the
rest counted as ``other``), a worker is ``tenant/worker_id`` of its stream
(at most ``max_workers``, then ``other``) — never a request or session id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from broker.metrics import Buckets, HistogramSnapshot
from scheduler import metric_names as m
from scheduler.runtime.observer import RequeueCause
from scheduler.types import Refusal, Request, WorkerFeedback

__all__ = ["OTHER", "RequestFigures", "RequestMetrics", "worker_label"]

OTHER = "other"  # the label past a cardinality cap


def worker_label(key: str) -> str:
    """``tenant/worker_id`` of a policy worker key ``tenant/worker_id#n``
    (``Core.new_session_key``): the stream number changes on every
    reconnect and must not become a label."""
    return key.rpartition("#")[0] or key


@dataclass(frozen=True, slots=True)
class RequestFigures:
    """A snapshot of :class:`RequestMetrics` (label value -> figure)."""

    tenant_waits: Mapping[str, HistogramSnapshot]
    band_waits: Mapping[str, HistogramSnapshot]
    tenant_ttft: Mapping[str, HistogramSnapshot]
    band_preemptions: Mapping[str, int]
    worker_tokens: Mapping[str, int]
    worker_lease_expiries: Mapping[str, int]
    worker_feedback: Mapping[str, WorkerFeedback]


class _Track:
    __slots__ = ("arrival", "band", "first_token", "queued_since", "tenant")

    def __init__(self, tenant: str, band: str, arrival: float) -> None:
        self.tenant = tenant
        self.band = band
        self.arrival = arrival
        self.queued_since: float | None = arrival
        self.first_token = False


class _Labels:
    """Hands out label values, at most ``cap`` distinct ones, then OTHER."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._cap:
            return OTHER
        self._seen.add(value)
        return value


class RequestMetrics:
    """See the module docstring."""

    def __init__(self, *, max_workers: int = 256, max_bands: int = 32) -> None:
        self._tracks: dict[str, _Track] = {}
        self._tenant_waits: dict[str, Buckets] = {}
        self._band_waits: dict[str, Buckets] = {}
        self._ttft: dict[str, Buckets] = {}
        self._band_preemptions: Counter[str] = Counter()
        self._worker_tokens: Counter[str] = Counter()
        self._lease_expiries: Counter[str] = Counter()
        self._feedback: dict[str, WorkerFeedback] = {}
        self.worker = _Labels(max_workers)  # policy worker key's label, capped
        self._band = _Labels(max_bands)

    def band(self, priority: int) -> str:
        return self._band(str(priority))

    def worker_of(self, key: str) -> str:
        return self.worker(worker_label(key))

    # ------------------------------------------------------------ observer

    def admitted(self, request: Request, properties: Mapping[str, str], decided: float) -> None:
        self._track(request)

    def refused(self, request: Request, refusal: Refusal, properties: Mapping[str, str]) -> None:
        pass  # the policy counts refusals by reason

    def stored(self, request_id: str, now: float) -> None:
        pass

    def granted(self, request: Request, worker: str, attempt: int, now: float) -> None:
        track = self._tracks.get(request.request_id) or self._track(request)
        since = track.queued_since
        if since is None:
            return
        track.queued_since = None
        wait = max(0.0, now - since)
        _buckets(self._tenant_waits, track.tenant, m.WAIT_BUCKETS).observe(wait)
        _buckets(self._band_waits, track.band, m.WAIT_BUCKETS).observe(wait)
        self._worker_tokens.setdefault(self.worker_of(worker), 0)
        self._lease_expiries.setdefault(self.worker_of(worker), 0)

    def carry(self, request_id: str, properties: Mapping[str, str]) -> Mapping[str, str]:
        return properties

    def first_token(self, request_id: str, worker: str, now: float) -> None:
        track = self._tracks.get(request_id)
        if track is None or track.first_token:
            return  # a resumed run's first token is not the request's
        track.first_token = True
        ttft = max(0.0, now - track.arrival)
        _buckets(self._ttft, track.tenant, m.TTFT_BUCKETS).observe(ttft)

    def tokens(self, worker: str, count: int) -> None:
        self._worker_tokens[self.worker_of(worker)] += count

    def feedback(self, worker: str, feedback: WorkerFeedback, now: float) -> None:
        self._feedback[self.worker_of(worker)] = feedback

    def requeued(self, request_id: str, worker: str, cause: str, now: float) -> None:
        track = self._tracks.get(request_id)
        if track is not None:
            track.queued_since = now
            if cause == RequeueCause.PREEMPTED:
                self._band_preemptions[track.band] += 1
        if cause == RequeueCause.LEASE_EXPIRED:
            self._lease_expiries[self.worker_of(worker)] += 1

    def completing(self, request_id: str, now: float) -> None:
        pass

    def finished(self, request_id: str, outcome: str, now: float) -> None:
        self._tracks.pop(request_id, None)

    # ------------------------------------------------------------ reading

    def snapshot(self) -> RequestFigures:
        return RequestFigures(
            tenant_waits=_snapshots(self._tenant_waits),
            band_waits=_snapshots(self._band_waits),
            tenant_ttft=_snapshots(self._ttft),
            band_preemptions=MappingProxyType(dict(self._band_preemptions)),
            worker_tokens=MappingProxyType(dict(self._worker_tokens)),
            worker_lease_expiries=MappingProxyType(dict(self._lease_expiries)),
            worker_feedback=MappingProxyType(dict(self._feedback)),
        )

    @property
    def live(self) -> int:
        """Requests tracked now (for tests: nothing may leak)."""
        return len(self._tracks)

    def _track(self, request: Request) -> _Track:
        band = self.band(request.priority)
        self._band_preemptions.setdefault(band, 0)
        track = _Track(request.tenant, band, request.arrival_s)
        self._tracks[request.request_id] = track
        return track


def _buckets(table: dict[str, Buckets], key: str, bounds: tuple[float, ...]) -> Buckets:
    found = table.get(key)
    if found is None:
        found = table[key] = Buckets(bounds)
    return found


def _snapshots(table: Mapping[str, Buckets]) -> Mapping[str, HistogramSnapshot]:
    return MappingProxyType({key: b.snapshot() for key, b in table.items()})
