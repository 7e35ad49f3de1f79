"""The scheduler's pure policy core: it takes ``now`` and returns decisions.

Standard library only (no clock, no I/O, no event loop), so the simulator
and the server run the very same objects. Start at :func:`create_policy`.
"""

from __future__ import annotations

from scheduler.policy.core import Scheduler
from scheduler.policy.factory import POLICY_NAMES, create_policy
from scheduler.policy.interface import Policy

__all__ = ["POLICY_NAMES", "Policy", "Scheduler", "create_policy"]
