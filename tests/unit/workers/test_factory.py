"""Backends by name from a mapping of options: the closed set and its errors."""

from __future__ import annotations

import pytest

from scheduler.clock import VirtualClock
from scheduler.sim.fleet import FleetModel
from workers.backends.factory import BACKEND_NAMES, create_backend
from workers.backends.hf import HFBackend
from workers.backends.openai import OpenAIBackend
from workers.backends.simulated import SimulatedBackend
from workers.backends.vllm import VllmBackend
from workers.errors import WorkerConfigError


def test_every_name_builds_its_backend() -> None:
    clock = VirtualClock()
    sim = create_backend(
        "simulated", {"model": {"decode_step_s": 0.01, "max_batch": 4}, "seed": 3}, clock=clock
    )
    assert isinstance(sim, SimulatedBackend)
    assert sim.config.model == FleetModel(decode_step_s=0.01, max_batch=4)
    assert isinstance(create_backend("hf", {"model": "/models/x"}, clock=clock), HFBackend)
    openai = create_backend(
        "openai",
        {"base_url": "http://127.0.0.1:8000", "model": "m", "engine": "vllm"},
        clock=clock,
    )
    assert isinstance(openai, OpenAIBackend)
    assert openai.config.engine.send_priority
    assert isinstance(create_backend("vllm", {"model": "m"}, clock=clock), VllmBackend)
    assert BACKEND_NAMES == ("simulated", "hf", "openai", "vllm")


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("tpu", {}, "unknown backend 'tpu': expected one of simulated, hf, openai, vllm"),
        (
            "hf",
            {"model": "x", "gpus": 2},
            r"unknown option\(s\) gpus; "
            r"allowed: batching, cache_memory, cuda_graphs, device, dtype, max_concurrency, model$",
        ),
        ("hf", {}, "backend 'hf': .*model"),
        ("hf", {"model": "x", "device": "tpu"}, "hf.device"),
        ("openai", {"base_url": "ftp://x", "model": "m"}, "openai.base_url"),
        ("openai", {"base_url": "http://x", "model": "m", "engine": "trt"}, "unknown engine 'trt'"),
        ("simulated", {"model": {"max_batch": 0}}, r"fleet\.model\.max_batch"),
        ("simulated", {"model": {"speed": 1}}, r"simulated\.model.*unknown option\(s\) speed"),
    ],
)
def test_bad_names_and_options_are_named(
    name: str, options: dict[str, object], message: str
) -> None:
    with pytest.raises(WorkerConfigError, match=message):
        create_backend(name, options, clock=VirtualClock())
