"""Fixtures for the scenario replays."""

from __future__ import annotations

import pytest

from tests.sim.scenarios import Scenario


@pytest.fixture(scope="module")
def scenario(request: pytest.FixtureRequest) -> Scenario:
    name: str = request.module.SCENARIO
    return Scenario(name)
