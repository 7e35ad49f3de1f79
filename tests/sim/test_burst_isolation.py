"""Issue 4 target: a light tenant keeps sub-second waits while another bursts 10x."""

from __future__ import annotations

import pytest

from tests.sim.scenarios import WINDOWS, Scenario

SCENARIO = "sim-burst"


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_light_tenant_waits_under_a_second(scenario: Scenario, seed: int, window: str) -> None:
    summary = scenario.run("tidegate", seed, window).summary
    light, bulk = summary["tenants"]["light"], summary["tenants"]["bulk"]
    assert light["wait_p99_s"] < 1.0
    assert bulk["wait_p99_s"] > 10.0  # the burst really did saturate the fleet
    assert light["rejections"] == 0
    assert summary["completed"] == summary["requests"]
    assert summary["busy_fraction_backlogged"] >= 0.95


def test_fifo_makes_the_light_tenant_wait_tens_of_seconds(scenario: Scenario) -> None:
    summary = scenario.run("fifo").summary
    assert summary["tenants"]["light"]["wait_p99_s"] > 20.0
