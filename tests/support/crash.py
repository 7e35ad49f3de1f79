"""SIGKILL a child process at a chosen moment and keep what it acknowledged before.

The crash tests of the log and of the broker both run a child that prints
``ready`` once it is set up, then one line per acknowledged write; the
parent kills it some time after ``ready`` and checks the store against the
lines. A line the kill cut short has no newline and is dropped here: the
child never finished acknowledging it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_and_kill(
    script: Path, args: Sequence[str], delay_s: float, *, ready_s: float, what: str
) -> list[str]:
    """Run ``script args``; SIGKILL it ``delay_s`` after its ``ready`` line.

    Returns its complete stdout lines after ``ready``, decoded. ``ready_s``
    bounds the wait for ``ready``; ``what`` names the child in the failure.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    lines: list[bytes] = []
    ready = threading.Event()

    def drain() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            if line == b"ready\n":
                ready.set()
            else:
                lines.append(line)
        ready.set()

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        assert ready.wait(ready_s), f"the {what} did not start"
        time.sleep(delay_s)  # the "random moment"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
        reader.join(30)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    return [line.decode() for line in lines if line.endswith(b"\n")]
