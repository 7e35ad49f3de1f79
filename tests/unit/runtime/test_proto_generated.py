"""The committed generated code is what scripts/gen-proto.sh makes of inference.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FILES = (
    "inference_pb2.py",
    "inference_pb2.pyi",
    "inference_pb2_grpc.py",
    "inference_pb2_grpc.pyi",
)


def test_committed_code_matches_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(tmp_path), "broker.proto"],
        check=True,
        env=env,
        capture_output=True,
    )
    stale = [
        name
        for name in FILES
        if (tmp_path / name).read_bytes() != (ROOT / "broker" / "proto" / name).read_bytes()
    ]
    assert not stale, f"run scripts/gen-proto.sh: {stale} differ from broker/proto/inference.proto"


def test_service_names_are_the_contract() -> None:
    from broker.proto import inference_pb2

    service = inference_pb2.DESCRIPTOR.services_by_name["Inference"]
    assert service.full_name == "tidegate.v1.Inference"
    assert [m.name for m in service.methods] == [
        "Submit",
        "SubmitStream",
        "Cancel",
        "Status",
        "Lease",
    ]
