"""Scenario replays: the shipped configs' workloads through the simulator."""

from __future__ import annotations

import dataclasses
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
from scheduler.types import WindowConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# The window settings the targets must hold under: the product's defaults
# (what the shipped configs use), and a cap at the engine's batch size, what
# an operator who knows the engine might set.
WINDOWS = ("default", "capped-at-batch")


class Scenario:
    """One shipped config: generate its workload once per seed, replay it per policy."""

    def __init__(self, name: str) -> None:
        self.settings = load_settings(CONFIGS / f"{name}.yaml", {})
        self._rows: dict[int, Any] = {}

    def run(self, policy: str, seed: int = 1, window: str | None = None) -> SimResult:
        """``window``: one of :data:`WINDOWS`, or None for the config's own."""
        if seed not in self._rows:
            self._rows[seed] = generate(to_workload_spec(self.settings), seed)
        config = to_scheduler_config(self.settings)
        fleet = to_fleet_config(self.settings)
        if window == "default":
            config = dataclasses.replace(config, window=WindowConfig())
        elif window == "capped-at-batch":
            capped = dataclasses.replace(WindowConfig(), maximum=fleet.model.max_batch)
            config = dataclasses.replace(config, window=capped)
        elif window is not None:
            raise ValueError(f"window {window!r} is not one of {WINDOWS}")
        return simulate(self._rows[seed], config, fleet, policy_name=policy, seed=seed)
