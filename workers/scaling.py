"""The autoscaler's runtime: read the queue depth, ask the policy, resize the fleet.

::

    scaler = Autoscaler(fleet, FleetStatusDepth("127.0.0.1:7400", fleet_key),
                        QueueDepthAutoscaler(AutoscaleConfig(1, 4)))
    scaler.run(stop)              # every interval_s until ``stop`` is set

Each :meth:`Autoscaler.step` ends the actors whose drain is over, reads the
queue (a failed reading is logged and counts as unknown: the policy holds),
hands the policy the reading, the replicas serving and the room Ray has,
and adds one actor or starts draining one. The policy
(:mod:`workers.autoscale`) is pure; this is the I/O around it. The fleet
is anything with the :class:`ScalableFleet` methods (:class:`RayFleet`).

:func:`serve_ray_autoscaled` is ``tidegate workers --min-replicas A
--max-replicas B``: a :class:`RayFleet` of ``A`` actors and this loop,
until SIGTERM or SIGINT; the queue depth source is closed at the end when it
has a ``close``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from workers.autoscale import AutoscaleConfig, QueueDepthAutoscaler, ScaleDecision
from workers.fleet import FleetSpec, RayFleet
from workers.queue_depth import QueueDepthSource
from workers.serve import until_signalled, where_and_kind

__all__ = ["Autoscaler", "ScalableFleet", "serve_ray_autoscaled"]

log = logging.getLogger("tidegate.scaling")

Announce = Callable[[str], None]


class ScalableFleet(Protocol):
    @property
    def replicas(self) -> int: ...

    def headroom(self) -> int | None: ...

    def add_replica(self) -> int: ...

    def drain_replica(self, timeout_s: float = ...) -> int | None: ...

    def reap(self, timeout_s: float = ...) -> list[tuple[int, dict[str, Any] | None]]: ...


class Autoscaler:
    """See the module docstring. ``drain_timeout_s``: how long a draining
    worker may take to finish its runs before it is stopped anyway."""

    def __init__(
        self,
        fleet: ScalableFleet,
        source: QueueDepthSource,
        policy: QueueDepthAutoscaler,
        *,
        interval_s: float = 2.0,
        drain_timeout_s: float = 600.0,
        announce: Announce | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.source = source
        self.policy = policy
        self.interval_s = interval_s
        self.drain_timeout_s = drain_timeout_s
        self.announce = announce or (lambda text: log.info("%s", text))
        self.now = now
        self.decisions: list[ScaleDecision] = []  # the changes made, in order
        self.reaped: list[tuple[int, dict[str, Any] | None]] = []  # drained actors' last stats
        self._read_failing = False
        self.failed_steps = 0  # steps that raised (tests, stats)

    def run(self, stop: threading.Event) -> None:
        """Step every ``interval_s`` until ``stop`` is set. A step that fails (Ray
        refusing an actor, its control store briefly out of reach) is logged
        and the fleet holds as it is: the workers serving keep serving."""
        while not stop.wait(self.interval_s):
            try:
                self.step()
            except Exception:  # any failure of one step: hold, and try again next time
                self.failed_steps += 1
                log.exception("autoscaler: a scaling step failed; the fleet holds as it is")

    def read(self) -> float | None:
        try:
            queued = self.source.read()
        except (OSError, ValueError) as exc:
            if not self._read_failing:  # once per outage, not every interval
                log.warning("autoscaler: cannot read the queue depth (%s); holding", exc)
            self._read_failing = True
            return None
        if self._read_failing:
            log.info("autoscaler: reading the queue depth again")
        self._read_failing = False
        return queued

    def step(self) -> ScaleDecision:
        for index, result in self.fleet.reap():
            self.reaped.append((index, result))
            how = "drained" if result and result.get("drained") else "stopped"
            self.announce(f"worker {index} {how} and gone; {self.fleet.replicas} serving")
        queued = self.read()
        fleet = self.fleet
        decision = self.policy.observe(self.now(), queued, fleet.replicas, fleet.headroom())
        if decision.action == "add":
            added = fleet.add_replica()
            self.announce(f"scaled up to {fleet.replicas} (worker {added}): {decision.reason}")
        elif decision.action == "remove":
            drained = fleet.drain_replica(self.drain_timeout_s)
            if drained is not None:
                self.announce(
                    f"scaling down to {fleet.replicas} (draining worker {drained}): "
                    f"{decision.reason}"
                )
        if decision.action != "hold":
            self.decisions.append(decision)
        return decision


def serve_ray_autoscaled(
    spec: FleetSpec,
    config: AutoscaleConfig,
    source: QueueDepthSource,
    announce: Announce,
    *,
    address: str | None,
    gpus: str = "auto",
    interval_s: float = 2.0,
    drain_timeout_s: float = 600.0,
    ready_timeout_s: float = 120.0,
) -> int:
    """``min_replicas`` actors, then resized on the queue depth until a signal."""
    with until_signalled() as stop:
        fleet = RayFleet(spec, config.min_replicas, address=address, gpus=gpus)
        try:
            fleet.start()
            ready = fleet.wait_ready(ready_timeout_s)
            announce(
                f"{ready} ready ({where_and_kind(fleet, address)}), backend {spec.backend}, "
                f"autoscaling {config.min_replicas}..{config.max_replicas} on the queue "
                f"depth from {source!r}"
            )
            scaler = Autoscaler(
                fleet,
                source,
                QueueDepthAutoscaler(config),
                interval_s=interval_s,
                drain_timeout_s=drain_timeout_s,
                announce=announce,
            )
            scaler.run(stop)
        finally:
            fleet.stop()
            close = getattr(source, "close", None)
            if callable(close):
                close()
    return 0
