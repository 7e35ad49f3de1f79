"""The backend contract, run against the simulated backend on the real clock.

A fast fleet model (2 ms decode steps) keeps each test well under a second.
"""

from __future__ import annotations

import pytest

from scheduler.clock import MonotonicClock
from scheduler.sim.fleet import FleetModel
from tests.support.backend_contract import BackendContract, BackendFactory
from workers.backends.simulated import SimulatedBackend, SimulatedConfig

FAST = FleetModel(
    prefill_tokens_per_s=200_000.0,
    decode_step_s=0.002,
    decode_step_per_seq_s=0.0001,
    max_batch=8,
    kv_capacity_tokens=50_000,
)


class TestSimulatedBackendContract(BackendContract):
    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        return lambda: SimulatedBackend(SimulatedConfig(model=FAST), MonotonicClock())
