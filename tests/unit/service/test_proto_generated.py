"""The committed generated code is what scripts/gen-proto.sh makes of each wire contract.

One test per proto (broker.proto, inference.proto): the script compiles
both in one run, so the run is shared and each proto is compared on its own.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PROTOS = ("broker", "inference")

# Each service's full name and its methods in order: the wire contract.
SERVICES = {
    "broker": (
        "Broker",
        "tidegate.v1.Broker",
        ["Publish", "PublishStream", "Subscribe", "Read", "ReadBody", "QueueInfo", "Status"],
    ),
    "inference": (
        "Inference",
        "tidegate.v1.Inference",
        ["Submit", "SubmitStream", "Cancel", "Status", "Lease", "FleetStatus"],
    ),
}


def generated_files(proto: str) -> tuple[str, ...]:
    return (f"{proto}_pb2.py", f"{proto}_pb2.pyi", f"{proto}_pb2_grpc.py", f"{proto}_pb2_grpc.pyi")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("grpc_tools")
    out = tmp_path_factory.mktemp("proto")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh"), str(out), "broker.proto"],
        check=True,
        env=env,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize("proto", PROTOS)
def test_committed_code_matches_the_proto(regenerated: Path, proto: str) -> None:
    stale = [
        name
        for name in generated_files(proto)
        if (regenerated / name).read_bytes() != (ROOT / "broker" / "proto" / name).read_bytes()
    ]
    assert not stale, f"run scripts/gen-proto.sh: {stale} differ from broker/proto/{proto}.proto"


@pytest.mark.parametrize("proto", PROTOS)
def test_service_names_are_the_contract(proto: str) -> None:
    name, full_name, methods = SERVICES[proto]
    module = importlib.import_module(f"broker.proto.{proto}_pb2")
    service = module.DESCRIPTOR.services_by_name[name]
    assert service.full_name == full_name
    assert [m.name for m in service.methods] == methods
