"""``create_policy``: the closed set of policy names and what each one builds."""

from __future__ import annotations

import random
from collections.abc import Callable

from scheduler.errors import UnknownPolicyError
from scheduler.policy.bands import BandedFair
from scheduler.policy.baselines import Fifo, RoundRobin, StrictPriority
from scheduler.policy.core import Scheduler
from scheduler.policy.interface import Policy, QueueDiscipline
from scheduler.types import SchedulerConfig

__all__ = ["POLICY_NAMES", "create_policy"]

_DISCIPLINES: dict[str, Callable[[], QueueDiscipline]] = {
    "tidegate": BandedFair,
    "fifo": Fifo,
    "round-robin": RoundRobin,
    "strict-priority": StrictPriority,
}

POLICY_NAMES: tuple[str, ...] = tuple(_DISCIPLINES)


def create_policy(name: str, config: SchedulerConfig, rng: random.Random) -> Policy:
    """A fresh policy. ``rng`` breaks ties between equally good workers, so a
    seeded one makes a whole simulation reproducible."""
    make = _DISCIPLINES.get(name)
    if make is None:
        raise UnknownPolicyError(
            f"policy {name!r} is not one of the choices: {', '.join(POLICY_NAMES)}"
        )
    return Scheduler(config, rng, make())
