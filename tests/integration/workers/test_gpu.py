"""Checks that need an NVIDIA GPU (marked ``gpu``; skipped without one)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from tests.support.backend_contract import request
from workers.backends.base import LENGTH, ChatMessage, collect
from workers.errors import ProbeUnavailableError
from workers.probe import NvmlProbe

pytestmark = [pytest.mark.gpu, pytest.mark.integration]


@pytest.fixture(scope="session")
def cuda() -> None:
    """Skips without a CUDA device; listed before tiny_model_dir, so nothing is built then."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")


def _nvml_or_skip() -> NvmlProbe:
    try:
        return NvmlProbe()
    except ProbeUnavailableError as exc:
        pytest.skip(f"no NVIDIA GPU here: {exc}")


def test_nvml_probe_reads_a_real_gpu() -> None:
    probe = _nvml_or_skip()
    try:
        first = probe.read(0.0)
        second = probe.read(0.1)
    finally:
        probe.close()
    assert len(first) == len(second) >= 1
    for reading in second:
        assert reading.utilisation is not None
        assert 0.0 <= reading.utilisation <= 1.0
        assert reading.memory_used is not None
        assert 0.0 < reading.memory_used <= 1.0
        assert reading.memory_total_bytes is not None
        assert reading.memory_total_bytes > 2**30
        if probe.gpm_supported(reading.device):
            assert reading.sm_occupancy is not None


def test_hf_backend_generates_on_the_gpu(cuda: None, tiny_model_dir: Path) -> None:
    from workers.backends.hf import HFBackend, HFConfig

    async def scenario() -> None:
        backend = HFBackend(HFConfig(str(tiny_model_dir), device="cuda"))
        await backend.start()
        try:
            assert backend.device.startswith("cuda")
            chat = (ChatMessage("user", "hello"),)
            _, finished = await collect(backend.generate(request("gpu-1", 16, prompt=chat)))
            assert (finished.output_tokens, finished.reason) == (16, LENGTH)
        finally:
            await backend.aclose()

    asyncio.run(scenario())


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_backend_generates_where_vllm_is_installed(cuda: None, tiny_model_dir: Path) -> None:
    from workers.backends.vllm import VllmBackend, VllmConfig

    async def scenario() -> None:
        backend = VllmBackend(
            VllmConfig(
                str(tiny_model_dir),
                engine_options={"gpu_memory_utilization": 0.3, "enforce_eager": True},
            )
        )
        await backend.start()
        try:
            _, finished = await collect(backend.generate(request("vllm-1", 16, priority=1)))
            assert finished.output_tokens == 16
        finally:
            await backend.aclose()

    asyncio.run(scenario())
