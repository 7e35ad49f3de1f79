"""A real ``tidegate serve`` with its metrics port, and a real Prometheus scraping it.

Prometheus comes from ``scripts/prometheus.sh`` (Debian's package, installed
when missing). Without root it cannot be installed: those tests skip and
say so. Anything else that keeps Prometheus from running (no apt-get, no
network for apt) fails them with the script's words: the dashboards' proof
must not vanish silently.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import ServeProcess
from tidegate.prometheus import PrometheusApi

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "prometheus.sh"
NOT_ROOT = 3  # the script's exit status: missing, and this is not root

KEYS = {
    "gold": "obs-gold-key-1",
    "silver": "obs-silver-key-2",
    "bronze": "obs-bronze-key-3",
    "fleet": "obs-fleet-key-4",
}

CONFIG = """\
tenants:
  gold:
    weight: 3
    max_priority: 1
    api_key_env: OBS_GOLD
  silver:
    weight: 2
    api_key_env: OBS_SILVER
  bronze:
    weight: 1
    max_lite_topics: 10000
    rate:
      requests_per_s: 3
      burst_s: 1
    api_key_env: OBS_BRONZE
  fleet:
    role: worker
    api_key_env: OBS_FLEET
broker:
  fsync: always
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LiveServer(ServeProcess):
    metrics_port: int = 0


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """``tidegate serve`` with --metrics-port, stopped by SIGTERM afterwards."""
    server = LiveServer(tmp_path, free_port())
    try:
        server.launch(
            CONFIG,
            {f"OBS_{t.upper()}": key for t, key in KEYS.items()},
            args=("--metrics-port", str(server.metrics_port)),
        )
    except RuntimeError as exc:
        pytest.fail(f"tidegate serve did not start: {exc}")
    try:
        yield server
    finally:
        code = server.stop(timeout=30, kill_late=True)
        assert code == 0, f"tidegate serve exited {code}\n{server.log()}"


@dataclass
class Prometheus:
    directory: Path
    url: str
    api: PrometheusApi

    def log(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text() if path.exists() else ""


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - the caller reads the status
        ["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="session")
def prometheus_installed() -> None:
    """Prometheus on this machine, installed by the project's script if missing."""
    done = _script("install")
    if done.returncode == NOT_ROOT:
        pytest.skip(f"Prometheus is missing and cannot be installed: {done.stderr.strip()}")
    if done.returncode != 0:
        pytest.fail(
            f"scripts/prometheus.sh install failed (exit {done.returncode}); the dashboards "
            f"cannot be proven without Prometheus:\n{done.stderr.strip()}"
        )


@pytest.fixture
def prometheus_factory(
    prometheus_installed: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Prometheus]]:
    """Start Prometheus scraping a target every second; stopped by pid afterwards."""
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        directory = tmp_path_factory.mktemp("prometheus")
        listen = f"127.0.0.1:{free_port()}"
        run = _script("start", str(directory), listen, target, "1s")
        if run.returncode != 0:
            pytest.fail(f"scripts/prometheus.sh start failed: {run.stderr.strip()}")
        prometheus = Prometheus(directory, f"http://{listen}", PrometheusApi(f"http://{listen}"))
        started.append(prometheus)
        deadline = time.monotonic() + 30
        while not prometheus.api.ready():
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not become ready:\n{prometheus.log()}")
            time.sleep(0.1)
        return prometheus

    try:
        yield start
    finally:
        for prometheus in started:
            _script("stop", str(prometheus.directory))
