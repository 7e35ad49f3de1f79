"""The in-process vLLM backend where vLLM is missing: a clear error naming it."""

from __future__ import annotations

import asyncio
import sys

import pytest

from workers.backends.vllm import VllmBackend, VllmConfig, import_vllm
from workers.errors import BackendNotInstalledError, WorkerConfigError


@pytest.fixture
def no_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes `import vllm` fail, installed or not.
    monkeypatch.setitem(sys.modules, "vllm", None)


@pytest.mark.usefixtures("no_vllm")
def test_starting_without_vllm_names_the_missing_package() -> None:
    backend = VllmBackend(VllmConfig(model="some/model"))
    with pytest.raises(BackendNotInstalledError, match=r"'vllm' package.*pip install vllm"):
        asyncio.run(backend.start())
    with pytest.raises(BackendNotInstalledError, match="openai backend"):
        import_vllm()


def test_a_model_is_required() -> None:
    with pytest.raises(WorkerConfigError, match=r"vllm\.model"):
        VllmConfig(model="")
