"""A real ``tidegate serve`` for the benchmarks: a child process on a free loopback port.

The bench writes a config with one tenant, ``bench``, whose API key is made
fresh for the run and handed to the child through its environment (never a
file, never the command line). The server binds ``127.0.0.1:0`` and we read
the port it announces, so two runs never race for a port. It is stopped by
its own pid: SIGTERM (it drains and exits 0), SIGKILL if it does not go in
time. ``recovery`` also kills it on purpose and starts it again on the same
data directory.

What :meth:`BenchServer.start` returns is the time from spawning the process
to the standard health service answering SERVING: for a restart on a full
log that is the recovery time a client sees.
"""

from __future__ import annotations

import os
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tidegate.bench.target import Target
from tidegate.errors import UsageError
from tidegate.options import ApiKey

__all__ = ["KEY_ENV", "TENANT", "BenchServer", "announced_port", "local_server", "workdir"]

TENANT = "bench"
KEY_ENV = "TIDEGATE_BENCH_KEY"
START_TIMEOUT_S = 120.0  # a restart replays the log: allow for a large one
STOP_TIMEOUT_S = 30.0

_CONFIG = """\
# written by `tidegate bench` for one run; removed afterwards
tenants:
  {tenant}:
    api_key_env: {env}
broker:
  fsync: {fsync}
"""


class BenchServer:
    """One ``tidegate serve`` child; :meth:`start` again after :meth:`kill` to recover."""

    def __init__(self, workdir: Path, data_dir: Path, fsync: str) -> None:
        self.workdir = workdir
        self.data_dir = data_dir
        self.fsync = fsync
        self.key = ApiKey(secrets.token_urlsafe(24))
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self.config = workdir / "config.yaml"
        self.config.write_text(_CONFIG.format(tenant=TENANT, env=KEY_ENV, fsync=fsync))
        self.log_path = workdir / "server.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise UsageError("the benchmark's server is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def target(self) -> Target:
        return Target(self.address, self.key, pid=self.pid, fsync=self.fsync)

    def start(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Spawn the server; seconds from spawn until its health service says SERVING."""
        if self._proc is not None:
            raise UsageError("the benchmark's server is already running")
        env = {**os.environ, KEY_ENV: self.key.reveal()}
        command = [
            sys.executable,
            "-m",
            "tidegate",
            "serve",
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            "--listen",
            "127.0.0.1:0",
        ]
        started = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and command
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env
            )
        try:
            self.port = self._announced_port(started + timeout_s)
            self._wait_serving(started + timeout_s)
        except BaseException:
            self.kill()
            raise
        return time.perf_counter() - started

    def _announced_port(self, deadline: float) -> int:
        """Read the first stdout line, ``tidegate serve: listening on HOST:PORT ...``."""
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        while b"\n" not in buffer:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise UsageError(f"the benchmark's server did not start in time{self._last_log()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = proc.wait(STOP_TIMEOUT_S)
                raise UsageError(f"the benchmark's server exited ({code}){self._last_log()}")
            buffer += chunk
        return announced_port(buffer.split(b"\n", 1)[0].decode("utf-8", "replace"))

    def _wait_serving(self, deadline: float) -> None:
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise UsageError(
                        f"the benchmark's server did not report SERVING in time{self._last_log()}"
                    )
                try:
                    reply = health.Check(request, timeout=min(left, 2.0), wait_for_ready=True)
                except grpc.RpcError:
                    time.sleep(0.01)
                    continue
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.01)

    def _last_log(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {lines[-1]}" if lines else ""

    def kill(self) -> None:
        """SIGKILL (a crash, for ``recovery``); returns once the process is gone."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not drain in time."""
        self._end(signal.SIGTERM)

    def _end(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def announced_port(line: str) -> int:
    """The port in ``tidegate serve: listening on HOST:PORT (...)``."""
    _, marker, rest = line.partition("listening on ")
    port = rest.split(" ", 1)[0].rpartition(":")[2]
    if not marker or not port.isdigit():
        raise UsageError(f"the benchmark's server said {line.strip()!r}, not where it listens")
    return int(port)


@contextmanager
def workdir(data_dir: str | None) -> Iterator[tuple[Path, Path]]:
    """A temporary directory for the config and log, and the data directory
    (``data_dir`` when given, kept afterwards; else inside the temporary one)."""
    with tempfile.TemporaryDirectory(prefix="tidegate-bench-") as tmp:
        root = Path(tmp)
        if data_dir is None:
            yield root, root / "data"
            return
        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"--data-dir {data_dir!r}: cannot create it ({reason})") from None
        yield root, path


@contextmanager
def local_server(fsync: str, data_dir: str | None = None) -> Iterator[BenchServer]:
    """A started server, stopped and its temporary files removed on the way out."""
    with workdir(data_dir) as (root, data):
        server = BenchServer(root, data, fsync)
        server.start()
        try:
            yield server
        finally:
            server.stop()
