"""Scenario replays: the shipped configs' workloads through the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheduler.settings import (
    load_settings,
    to_fleet_config,
    to_scheduler_config,
    to_workload_spec,
)
from scheduler.sim.simulate import SimResult, simulate
from scheduler.sim.workload import generate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class Scenario:
    """One shipped config: generate its workload once per seed, replay it per policy."""

    def __init__(self, name: str) -> None:
        self.settings = load_settings(CONFIGS / f"{name}.yaml", {})
        self._rows: dict[int, Any] = {}

    def run(self, policy: str, seed: int = 1) -> SimResult:
        if seed not in self._rows:
            self._rows[seed] = generate(to_workload_spec(self.settings), seed)
        return simulate(
            self._rows[seed],
            to_scheduler_config(self.settings),
            to_fleet_config(self.settings),
            policy_name=policy,
            seed=seed,
        )
