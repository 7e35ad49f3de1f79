"""The public Azure traces, code and conversation as two tenants, replayed for an hour."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.settings import load_settings, to_fleet_config, to_scheduler_config
from scheduler.sim.simulate import simulate
from scheduler.sim.traces import convert_azure, read_azure

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "traces"
FILES = ("azure2023_AzureLLMInferenceTrace_code.csv", "azure2023_AzureLLMInferenceTrace_conv.csv")


@pytest.mark.slow
def test_chat_is_isolated_from_code_bursts() -> None:
    if not all((SHARED / name).exists() for name in FILES):
        pytest.skip("the shared Azure traces are not on this machine")
    sources = [(name, read_azure(SHARED / name)) for name in FILES]
    rows = convert_azure(sources, ["coder", "chat"], assign="file")
    settings = load_settings(REPO / "configs" / "sim-azure.yaml", {})
    config, fleet = to_scheduler_config(settings), to_fleet_config(settings)
    fair = simulate(rows, config, fleet, policy_name="tidegate").summary
    fifo = simulate(rows, config, fleet, policy_name="fifo").summary
    assert fair["completed"] == fifo["completed"] == len(rows) == 28_185
    chat_fair = fair["tenants"]["chat"]["wait_p99_s"]
    chat_fifo = fifo["tenants"]["chat"]["wait_p99_s"]
    assert chat_fair < 3.0
    assert chat_fifo > 3 * chat_fair
    assert fair["busy_fraction_backlogged"] >= 0.95
