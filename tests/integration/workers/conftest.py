"""Fixtures for the workers' integration tests: a tiny model built once per
session, and a real ``transformers serve`` process serving it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.model_server import ModelServer, start_model_server
from tests.support.tiny_model import build_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is built locally
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def model_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServer]:
    # Continuous batching serves streams side by side (without it, transformers
    # serve generates one request at a time). A small paged KV cache keeps its
    # start-up warm-up to milliseconds: 128 blocks x 32 tokens.
    server = start_model_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("serve"),
        continuous_batching=True,
        cb_options=(
            "--cb-num-blocks",
            "128",
            "--cb-block-size",
            "32",
            "--cb-max-batch-tokens",
            "256",
        ),
    )
    try:
        yield server
    finally:
        server.stop()
