"""TLS and mutual TLS between the SDK and a real server, with certificates made here."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidegate
from tests.integration.sdk.conftest import KEYS, RETRY, Server
from tidegate import Client, Retry, Start, Tls

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(where: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=where,
    )
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:tidegate.test\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=where,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            *ext,
            cwd=where,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("pki")
    make_pki(where)
    return where


def tls_server(directory: Path, pki: Path, *, mutual: bool) -> Server:
    directory.mkdir()
    section = (
        f"server:\n  tls_cert_file: {pki / 'server.pem'}\n  tls_key_file: {pki / 'server.key'}\n"
    )
    if mutual:
        section += f"  tls_client_ca_file: {pki / 'ca.pem'}\n"
    return Server(directory, extra_config=section).start()


@pytest.fixture
def served(tmp_path: Path, pki: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    server = tls_server(tmp_path / "srv", pki, mutual=bool(request.param))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("served", [False], indirect=True)
def test_tls_round_trip_and_a_plaintext_client_is_refused(served: Server, pki: Path) -> None:
    tls = Tls.from_files(ca=pki / "ca.pem")
    with Client(served.address, api_key=KEYS["acme"], tls=tls, retry=RETRY) as client:
        client.publish("secure", b"sealed", lite="x")
        with client.subscribe("secure", ["x"], start=Start.earliest()) as sub:
            message = sub.get(timeout=10)
        assert message is not None
        assert message.body == b"sealed"
    # A name other than the address, checked against the certificate's names.
    named = Tls.from_files(ca=pki / "ca.pem", server_name="tidegate.test")
    with Client(served.address, api_key=KEYS["acme"], tls=named, retry=RETRY) as client:
        assert client.status().tenant == "acme"
    quick = Retry(initial_s=0.02, max_s=0.1, give_up_s=0.5)
    with (
        Client(served.address, api_key=KEYS["acme"], retry=quick) as plain,
        pytest.raises(tidegate.Unavailable),
    ):
        plain.status()


@pytest.mark.parametrize("served", [True], indirect=True)
def test_mutual_tls_needs_the_client_certificate(served: Server, pki: Path) -> None:
    mutual = Tls.from_files(ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client.key")
    with Client(served.address, api_key=KEYS["acme"], tls=mutual, retry=RETRY) as client:
        assert client.status().tenant == "acme"
    quick = Retry(initial_s=0.02, max_s=0.1, give_up_s=0.5)
    server_only = Tls.from_files(ca=pki / "ca.pem")
    with (
        Client(served.address, api_key=KEYS["acme"], tls=server_only, retry=quick) as client,
        pytest.raises(tidegate.Unavailable),
    ):
        client.status()
