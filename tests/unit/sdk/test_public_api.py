"""The SDK's declared public API, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tidegate
from tidegate.connect import Connection
from tidegate.errors import InvalidArgument


def test_every_public_name_resolves() -> None:
    for name in tidegate.__all__:
        assert getattr(tidegate, name) is not None
    assert issubclass(tidegate.Unavailable, tidegate.CallFailed)
    assert issubclass(tidegate.CallFailed, tidegate.TidegateError)


def test_import_tidegate_loads_neither_grpc_nor_the_broker() -> None:
    code = (
        "import sys, tidegate\n"
        "print(','.join(m for m in ('grpc', 'broker', 'rocksdict') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_the_client_loads_the_wire_contract_but_not_the_store() -> None:
    code = (
        "import sys, tidegate\n"
        "tidegate.Client\n"
        "print(','.join(m for m in ('broker.store', 'rocksdict', 'scheduler') "
        "if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_the_key_stays_out_of_the_client_repr() -> None:
    with tidegate.Client("127.0.0.1:1", api_key="very-secret-key") as client:
        assert "very-secret-key" not in repr(client)
        assert "very-secret-key" not in repr(client._conn)


@pytest.mark.parametrize("server", ["localhost", ":7400", "host:port", ""])
def test_a_bad_server_address_is_refused(server: str) -> None:
    with pytest.raises(InvalidArgument, match="HOST:PORT"):
        tidegate.Client(server)


def test_a_bad_timeout_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="timeout_s"):
        Connection.make(
            "h:1",
            api_key=None,
            tenant=None,
            tls=None,
            retry=None,
            timeout_s=0,
            producer_id=None,
            first_sequence=None,
            rng=None,
        )
