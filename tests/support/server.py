"""A real ``tidegate serve`` child process on loopback, shared by the integration suites.

Each suite writes its own tenants and keys; this owns what they all did the
same way: write ``config.yaml`` into the server's directory, start the
process with its stderr in ``server.log``, read the port it announces on
stdout, and stop it by pid (signal first, then close the test's channels).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

MiB = 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MiB),
    ("grpc.max_send_message_length", 64 * MiB),
]


@dataclass
class ServeProcess:
    """One server process and the channels tests opened to it.

    The state fields are keyword-only so that a suite's subclass can add its
    own positional fields (fsync, extra config) after ``directory``.
    """

    directory: Path
    proc: subprocess.Popen[str] | None = field(default=None, kw_only=True)
    port: int = field(default=0, kw_only=True)
    channels: list[grpc.Channel] = field(default_factory=list, kw_only=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config(self) -> Path:
        return self.directory / "config.yaml"

    def launch(
        self,
        config: str,
        env: Mapping[str, str],
        *,
        args: tuple[str, ...] = (),
        port: int = 0,
    ) -> None:
        """Start ``tidegate serve`` with ``config`` (YAML text) and ``env`` over ours.

        ``port`` 0 takes a free one; a restart passes the old port so that
        clients reconnect to the same address. Returns once the server has
        announced its address (it listens from then on).
        """
        self.config.write_text(config)
        with open(self.directory / "server.log", "a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tidegate",
                    "serve",
                    "--config",
                    str(self.config),
                    "--data-dir",
                    str(self.directory / "data"),
                    "--listen",
                    f"127.0.0.1:{port}",
                    *args,
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **env},
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            self.proc.wait(10)
            self.proc.stdout.close()
            self.proc = None
            raise RuntimeError(f"server did not start: {line!r}\n{self.log()}")
        self.port = int(line.split("listening on ")[1].split()[0].rpartition(":")[2])

    def log(self) -> str:
        return (self.directory / "server.log").read_text()

    def channel(self) -> grpc.Channel:
        """A channel to the server, closed when the server stops."""
        channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self.channels.append(channel)
        return channel

    def close_channels(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels.clear()

    def stop(
        self, sig: int = signal.SIGTERM, timeout: float = 30.0, *, kill_late: bool = False
    ) -> int:
        """Send ``sig``, wait for the exit and return its code; then close our channels.

        Signal first, close after: a kill must land while clients are still
        talking to the server, not after they hung up. ``kill_late`` kills a
        server still running after ``timeout`` instead of raising
        ``subprocess.TimeoutExpired``.
        """
        assert self.proc is not None
        code = stop_process(self.proc, sig, timeout, kill_late=kill_late)
        self.close_channels()
        self.proc = None
        return code

    def kill(self) -> None:
        """Teardown: SIGKILL whatever still runs, close every channel."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        self.close_channels()


def stop_process(
    proc: subprocess.Popen[str],
    sig: int = signal.SIGTERM,
    timeout: float = 30.0,
    *,
    kill_late: bool = True,
) -> int:
    """Send ``sig`` unless ``proc`` already exited, wait, close its stdout; the exit code.

    ``kill_late`` kills a process still running after ``timeout``; without
    it the wait's ``subprocess.TimeoutExpired`` reaches the test.
    """
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if not kill_late:
            raise
        proc.kill()
        code = proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()
    return code
