"""Start a real ``transformers serve`` process on a free loopback port.

The OpenAI backend's tests talk to this real server (no hand-written mock):
it serves the tiny model from :mod:`tests.support.tiny_model` over the same
SSE protocol vLLM and SGLang speak. Offline: HF_HUB_OFFLINE=1, and a private
HF_HOME so nothing is read from or written to a user cache.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["ModelServer", "free_port", "start_model_server"]


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ModelServer:
    proc: subprocess.Popen[bytes]
    port: int
    model: str
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_model_server(
    model_dir: Path,
    workdir: Path,
    *,
    continuous_batching: bool = False,
    cb_options: tuple[str, ...] = (),
    startup_timeout_s: float = 90.0,
) -> ModelServer:
    """Start the server, wait for /health, and return it (the caller stops it)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "transformers-serve.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(workdir / "hf-home"),
        "OMP_NUM_THREADS": "1",  # the machine is shared; a tiny model needs no more
        "TOKENIZERS_PARALLELISM": "false",
    }
    cmd = [
        sys.executable,
        "-c",
        "import sys; from transformers.cli.transformers import main; sys.exit(main())",
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--continuous-batching" if continuous_batching else "--no-continuous-batching",
    ]
    if continuous_batching:
        cmd += cb_options
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ModelServer(proc, port, str(model_dir), log_path)
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"transformers serve exited with {proc.returncode}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.base_url}/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"transformers serve did not answer /health within {startup_timeout_s}s:\n"
        f"{server.log_tail()}"
    )
