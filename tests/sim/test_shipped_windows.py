"""The shipped scenario configs run on the product's default window (issue 4).

A cap at the engine's batch once hid a drain stall of the adaptive window;
the targets must hold without it, so the configs must not bring it back.
"""

from __future__ import annotations

import pytest

from scheduler.settings import load_settings, to_scheduler_config
from scheduler.types import WindowConfig
from tests.sim.scenarios import CONFIGS


@pytest.mark.parametrize("name", ["sim-burst", "sim-fair-124", "sim-priority", "sim-azure"])
def test_scenario_configs_leave_the_window_at_its_defaults(name: str) -> None:
    config = to_scheduler_config(load_settings(CONFIGS / f"{name}.yaml", {}))
    assert config.window == WindowConfig()
