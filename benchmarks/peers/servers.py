"""Start Redis, nats-server (JetStream) and ``tidegate serve`` on loopback; stop them by pid.

Each server gets a free port on 127.0.0.1 and its own temporary directory
(data, config, log), removed on stop. After start, the server's listening
sockets are checked: one that is not on loopback stops the run. Stopping
signals the process by its own pid (SIGTERM, then SIGKILL after a bound);
nothing here looks processes up by name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers.results import (
    Tier,
    listening_addresses,
    non_loopback,
    parse_nats_version,
    parse_stat_cpu,
    parse_vm_rss,
)

__all__ = ["PeerServer", "TidegateServer", "binary", "start_nats", "start_redis", "start_tidegate"]

_START_S = 30.0
_STOP_S = 30.0


class ServerError(RuntimeError):
    """A server did not start, or listened where it must not."""


def binary(name: str) -> str:
    """Path of a server binary (Debian puts nats-server in /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise ServerError(f"{name} is not installed: run `make bench-peers` (it installs it)")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PeerServer:
    """One server process, its port and its temporary directory."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    directory: Path
    version: str
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        return parse_vm_rss(Path(f"/proc/{self.pid}/status").read_text(encoding="ascii"))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text(encoding="ascii", errors="replace")
        return parse_stat_cpu(stat, os.sysconf("SC_CLK_TCK"))

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "server.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def check_loopback(self) -> None:
        """Stop the server if any socket it listens on is reachable off loopback."""
        inodes = set()
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        listening = []
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(FileNotFoundError):  # no IPv6 in this kernel
                text = Path(f"/proc/{self.pid}/net/{table}").read_text(encoding="ascii")
                listening += listening_addresses(text, inodes)
        if not listening:
            self.stop()
            raise ServerError(f"{self.name} (pid {self.pid}) listens on no TCP socket")
        outside = non_loopback(listening)
        if outside:
            self.stop()
            raise ServerError(f"{self.name} listened on {outside}; only loopback is allowed")

    def stop(self) -> int | None:
        """Signal this pid to stop, SIGKILL it after a bound; remove the directory."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(self.stop_signal)
            try:
                code = self.proc.wait(_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(_STOP_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        return code


def _spawn(
    argv: list[str], directory: Path, env: dict[str, str] | None = None, *, pipe: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``directory``, output to its log (stdout to a pipe if ``pipe``)."""
    with open(directory / "server.log", "ab") as log:
        return subprocess.Popen(
            argv,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipe else log,
            stderr=log,
            env=env,
        )


def _wait_for(server: PeerServer, ready: Callable[[], bool]) -> None:
    """Poll ``ready()`` until it is true, the process dies, or the bound passes."""
    deadline = time.monotonic() + _START_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise ServerError(f"{server.name} exited with {server.proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError):
            if ready():
                server.check_loopback()
                return
        time.sleep(0.05)
    tail = server.log_tail()
    server.stop()
    raise ServerError(f"{server.name} was not ready within {_START_S:.0f} s:\n{tail}")


def _greets(port: int, prefix: bytes, hello: bytes = b"") -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
        if hello:
            conn.sendall(hello)
        return conn.recv(64).startswith(prefix)


# ------------------------------------------------------------------ Redis

_REDIS_CONF = """\
bind 127.0.0.1
protected-mode yes
port {port}
daemonize no
dir {dir}
logfile {dir}/server.log
appendonly yes
appendfsync {appendfsync}
save ""
auto-aof-rewrite-percentage 0
"""


def start_redis(tier: Tier) -> PeerServer:
    """redis-server with an AOF: ``everysec`` at the window tier, ``always`` at fsync."""
    exe = binary("redis-server")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    directory = Path(tempfile.mkdtemp(prefix="peers-redis-"))
    port = _free_port()
    appendfsync = "everysec" if tier is Tier.WINDOW else "always"
    conf = directory / "redis.conf"
    conf.write_text(_REDIS_CONF.format(port=port, dir=directory, appendfsync=appendfsync))
    server = PeerServer(
        "redis",
        _spawn([exe, str(conf)], directory),
        port,
        directory,
        version.stdout.split()[2].removeprefix("v="),
    )
    _wait_for(server, lambda: _greets(port, b"+PONG", b"PING\r\n"))
    return server


# ------------------------------------------------------------------ NATS

_NATS_CONF = """\
host: 127.0.0.1
port: {port}
jetstream {{
  store_dir: "{dir}/js"
  max_memory_store: 268435456
  max_file_store: 68719476736
{extra}}}
"""


def nats_version() -> tuple[int, int, int]:
    out = subprocess.run(
        [binary("nats-server"), "--version"], capture_output=True, text=True, check=False
    )
    return parse_nats_version(out.stdout + out.stderr)


def start_nats(tier: Tier) -> PeerServer:
    """nats-server with JetStream on a file store; fsync tier needs 2.10+."""
    exe = binary("nats-server")
    version = nats_version()
    directory = Path(tempfile.mkdtemp(prefix="peers-nats-"))
    port = _free_port()
    extra = "  sync_interval: always\n" if tier is Tier.FSYNC else ""
    conf = directory / "nats.conf"
    conf.write_text(_NATS_CONF.format(port=port, dir=directory, extra=extra))
    server = PeerServer(
        "nats-server",
        _spawn([exe, "-c", str(conf), "-l", str(directory / "server.log")], directory),
        port,
        directory,
        ".".join(map(str, version)),
        # Both stop it gracefully; SIGINT is the one it answers with exit status 0.
        stop_signal=signal.SIGINT,
    )
    _wait_for(server, lambda: _greets(port, b"INFO "))
    return server


# ------------------------------------------------------------------ tidegate

_TIDEGATE_CONF = """\
tenants:
  bench:
    api_key_env: TIDEGATE_PEERS_KEY
broker:
  fsync: {fsync}
"""


@dataclass
class TidegateServer(PeerServer):
    api_key: str = ""


def start_tidegate(tier: Tier) -> TidegateServer:
    """``tidegate serve`` (this checkout's) with ``fsync: interval`` or ``always``."""
    from tidegate import __version__

    directory = Path(tempfile.mkdtemp(prefix="peers-tidegate-"))
    fsync = "interval" if tier is Tier.WINDOW else "always"
    (directory / "config.yaml").write_text(_TIDEGATE_CONF.format(fsync=fsync))
    key = secrets.token_hex(16)
    env = {**os.environ, "TIDEGATE_PEERS_KEY": key}
    argv = [
        sys.executable, "-m", "tidegate", "serve",
        "--config", str(directory / "config.yaml"),
        "--data-dir", str(directory / "data"),
        "--listen", "127.0.0.1:0",
    ]  # fmt: skip
    proc = _spawn(argv, directory, env, pipe=True)
    server = TidegateServer("tidegate", proc, 0, directory, __version__, api_key=key)
    line = _announcement(proc)
    if "listening on " not in line:
        tail = server.log_tail()
        server.stop()
        raise ServerError(f"tidegate serve did not start: {line!r}\n{tail}")
    server.port = int(line.split("listening on ")[1].split()[0].rpartition(":")[2])
    server.check_loopback()
    return server


def _announcement(proc: subprocess.Popen[bytes]) -> str:
    """The first stdout line, within the start bound (empty if none came)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(_START_S):
            return ""
    return proc.stdout.readline().decode(errors="replace")
